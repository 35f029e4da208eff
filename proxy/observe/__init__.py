"""Metrics and logs: consumers of what the data plane does, never decision makers."""
