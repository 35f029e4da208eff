"""What an attempt's result means for the breaker (and, later, for retries): one classifier.

Connect errors, timeouts, broken responses and the route's failure statuses (5xx by default)
are failures. 429 is a rate-limit signal, never a failure. Any other answer proves the upstream
alive: a success. Requests the sidecar refused itself say nothing about the upstream.
"""

from __future__ import annotations

import json
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


THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
"""Google's 403 reasons that mean "slow down" (``quotaExceeded`` is a daily quota: not a rate signal)."""
PEEKED_STATUS = 403
"""The one status whose meaning depends on its (small, JSON) body."""


def throttle_reason(status: int, error_body: bytes | None) -> str | None:
    """Why the upstream's answer is a throttling signal, or None: ``429``, or Google's 403 reason."""
    if status == RATE_LIMITED:
        return "429"
    if status != PEEKED_STATUS or not error_body:
        return None
    try:
        parsed = json.loads(error_body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    details = error.get("errors") if isinstance(error, dict) else None
    for item in details if isinstance(details, list) else ():
        reason = item.get("reason") if isinstance(item, dict) else None
        if reason in THROTTLE_REASONS:
            return str(reason)
    return None
