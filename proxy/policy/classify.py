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


def google_reasons(error_body: bytes | None) -> list[str] | None:
    """The ``errors[].reason`` values of a Google-shaped JSON error body; None when it is not one."""
    if not error_body:
        return None
    try:
        parsed = json.loads(error_body)
    except (ValueError, RecursionError):  # RecursionError: the upstream's JSON nested past the stack
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    details = error.get("errors") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    return [str(item["reason"]) for item in details if isinstance(item, dict) and "reason" in item]


def throttle_reason(status: int, error_body: bytes | None) -> str | None:
    """Why the upstream's answer is a throttling signal, or None: ``429``, or Google's 403 reason."""
    if status == RATE_LIMITED:
        return "429"
    if status != PEEKED_STATUS:
        return None
    for reason in google_reasons(error_body) or ():
        if reason in THROTTLE_REASONS:
            return reason
    return None


DUPLICATE_REASON = "duplicate"


def names_other_conflict(error_body: bytes | None) -> bool:
    """A 409 whose body gives reasons, none of them Google's ``duplicate``: some other conflict,
    which a lookup of the resource would misreport. A body without reasons is not evidence either way."""
    reasons = google_reasons(error_body)
    return bool(reasons) and DUPLICATE_REASON not in (reasons or ())
