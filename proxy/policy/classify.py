"""What an attempt's result means for the breaker (and, later, for retries): one classifier.

Connect errors, timeouts, broken responses and the route's failure statuses (5xx by default)
are failures. 429 is a rate-limit signal, never a failure. Any other answer proves the upstream
alive: a success. Requests the sidecar refused itself say nothing about the upstream.
"""

from __future__ import annotations

from enum import Enum

from proxy.errors import ProxyError, UpstreamError

RATE_LIMITED = 429


class Outcome(str, Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


def classify(status: int, error: ProxyError | None, failure_statuses: frozenset[int], *,
             seconds: float = 0.0, slow_call: float = 0.0) -> Outcome:
    """``status`` as relayed (0 if none), ``error`` the sidecar's own error if it answered itself."""
    if error is not None:
        return Outcome.FAILURE if isinstance(error, UpstreamError) else Outcome.IGNORED
    if status == RATE_LIMITED:
        return Outcome.IGNORED
    if status in failure_statuses:
        return Outcome.FAILURE
    if slow_call and seconds > slow_call:
        return Outcome.FAILURE
    return Outcome.SUCCESS
