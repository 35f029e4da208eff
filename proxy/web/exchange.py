"""What the data plane learnt about one request: the record its stages fill in, for the access log and metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Exchange:
    """One request's totals, written by the stages as they pass (body, attempts, relay)."""

    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    truncated: bool = False
    """The upstream failed after the response head was sent: the client got a cut-short body."""
    error: str | None = None
    """The Proxy-Status error type of a failure, for the access log."""
    attempts: int = 0
    route: str | None = None
