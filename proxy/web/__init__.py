"""The HTTP side: routing, forwarding, admin endpoints."""
