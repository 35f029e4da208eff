"""What an attempt's outcome means: the one classifier every consumer asks (pure).

An outcome is a status the upstream answered, or the Proxy-Status error type (RFC 9209) of an
attempt that got no response head. From it alone this module says:

- for the breaker (:func:`breaker_count`): connect errors, timeouts, broken responses and the
  route's failure statuses (5xx by default) are failures; 429 is a rate-limit signal, never a
  failure; any other answer proves the upstream alive; what the sidecar refused itself is ignored;
- for the retry rules (:func:`retry_facts`): which kind it was (``connect_error``, ``timeout``,
  ``reset``, or the status) and whether the request may have reached the upstream;
- for the rate limits (:func:`throttle_reason`): whether the upstream said "slow down" (a 429,
  or a 403 whose small JSON body gives one of Google's throttling reasons), and why;
- for the observers, from a finished request: whether it is worth a Sentry report
  (:func:`worth_reporting`) and whether it counts against the upstream's error rate
  (:func:`upstream_failed`).

The web layer turns aiohttp's exceptions into :mod:`proxy.errors` (which carry the error types);
it decides nothing about what they mean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from proxy.config.policy_values import CONNECT_ERROR, RESET, TIMEOUT, TOO_MANY_REQUESTS
from proxy.errors import BodyTooLarge, InternalError, NoRoute, RequestRejected
from proxy.policy.retry import RetryFacts

TLS_ERROR = "tls_error"
"""A retry kind no ``on`` list can name: a TLS failure will fail the same way again."""
CLIENT_DISCONNECTED = "client_disconnected"
"""The error type of a request whose client went away before its answer."""


class BreakerCount(str, Enum):
    """What one attempt counts as in its route's breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


@dataclass(frozen=True)
class NoAnswer:
    """What an attempt that got no response head means."""

    kind: str
    """Its retry kind."""
    reached: bool
    """False when the request certainly never reached the upstream (so even a POST may be repeated)."""


NO_ANSWER: Mapping[str, NoAnswer] = {
    "connection_refused": NoAnswer(CONNECT_ERROR, reached=False),
    "dns_error": NoAnswer(CONNECT_ERROR, reached=False),
    "connection_timeout": NoAnswer(CONNECT_ERROR, reached=False),
    "tls_certificate_error": NoAnswer(TLS_ERROR, reached=False),
    "tls_protocol_error": NoAnswer(TLS_ERROR, reached=False),
    "http_response_timeout": NoAnswer(TIMEOUT, reached=True),
    "http_response_incomplete": NoAnswer(RESET, reached=True),
    "http_protocol_error": NoAnswer(RESET, reached=True),
    "connection_terminated": NoAnswer(RESET, reached=True),
}
"""The error types of an upstream that could not answer an attempt (the sidecar's own 502 and 504)."""

SIDECAR_ANSWERS = frozenset({
    RequestRejected.proxy_status, NoRoute.proxy_status, BodyTooLarge.proxy_status, InternalError.proxy_status,
    CLIENT_DISCONNECTED,
})
"""Error types of answers the sidecar gave without the upstream's part: rate limits, bad requests,
its own bugs, a client that left. They say nothing about the upstream."""
REPORTED_STATUSES = frozenset({502, 504})


def breaker_count(status: int, error: str | None, failure_statuses: frozenset[int], *,
                  seconds: float = 0.0, slow_call: float = 0.0) -> BreakerCount:
    """``status`` as answered (0 if none), ``error`` the attempt's error type when it got no answer."""
    if error is not None:
        return BreakerCount.FAILURE if error in NO_ANSWER else BreakerCount.IGNORED
    if status == TOO_MANY_REQUESTS:
        return BreakerCount.IGNORED
    if status in failure_statuses:
        return BreakerCount.FAILURE
    if slow_call and seconds > slow_call:
        return BreakerCount.FAILURE
    return BreakerCount.SUCCESS


def retry_facts(status: int, error: str | None, retry_after: float | None = None,
                throttled: bool = False) -> RetryFacts:
    """The facts the retry rules weigh. An error the sidecar raised itself during an attempt keeps its
    own type as the kind: no ``on`` list names it, so it is never retried."""
    if error is None:
        return RetryFacts(status, retry_after=retry_after, throttled=throttled)
    meaning = NO_ANSWER.get(error)
    if meaning is None:
        return RetryFacts(error)
    return RetryFacts(meaning.kind, reached_upstream=meaning.reached)


def worth_reporting(status: int, error: str | None) -> bool:
    """A final answer worth a Sentry report: the sidecar's own 502/504 because the upstream could not answer."""
    return error in NO_ANSWER and status in REPORTED_STATUSES


def upstream_failed(status: int, error: str | None) -> bool | None:
    """Did the upstream fail this request, as its callers saw it? None: it says nothing about it.

    A failure is a 5xx (relayed or the sidecar's, breaker fast-fails included) or an error the
    sidecar set because the upstream could not answer (a body cut short too); 4xx answers are successes.
    """
    if error in SIDECAR_ANSWERS:
        return None
    return status >= 500 or error is not None


THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
"""Google's 403 reasons that mean "slow down" (``quotaExceeded`` is a daily quota: not a rate signal)."""
PEEKED_STATUS = 403
"""The one status whose meaning depends on its (small, JSON) body."""


def body_decides(status: int) -> bool:
    """Whether an answer's meaning depends on its body, so the web layer should read a small one whole."""
    return status == PEEKED_STATUS


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
    if status == TOO_MANY_REQUESTS:
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
