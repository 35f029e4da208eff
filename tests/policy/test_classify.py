"""The classifier (pure): what an attempt's outcome means to the breaker, the retries, the rate limits,
Sentry and the alerts; and Google's error reasons (throttling 403s, duplicate 409s)."""

from __future__ import annotations

import json

import pytest

from proxy.config.policy_values import CONNECT_ERROR, RESET, TIMEOUT
from proxy.errors import CircuitOpen, RequestRejected, UpstreamConnectError, UpstreamResponseError, UpstreamTimeout
from proxy.policy.classify import (
    NO_ANSWER,
    TLS_ERROR,
    BreakerCount,
    body_decides,
    breaker_count,
    names_other_conflict,
    retry_facts,
    throttle_reason,
    upstream_failed,
    worth_reporting,
)


def google(reason: str, code: int = 403) -> bytes:
    return json.dumps({"error": {"code": code, "message": "m",
                                 "errors": [{"domain": "usageLimits", "reason": reason, "message": "m"}]}}).encode()


def test_throttling_403s_are_told_from_quota_and_other_403s() -> None:
    assert throttle_reason(403, google("rateLimitExceeded")) == "rateLimitExceeded"
    assert throttle_reason(403, google("userRateLimitExceeded")) == "userRateLimitExceeded"
    assert throttle_reason(403, google("quotaExceeded")) is None
    assert throttle_reason(403, google("forbidden")) is None
    assert throttle_reason(403, b"not json") is None and throttle_reason(403, None) is None
    assert throttle_reason(429, None) == "429"
    assert throttle_reason(500, google("rateLimitExceeded")) is None


def test_a_409_is_another_conflict_only_when_its_reasons_say_so() -> None:
    assert not names_other_conflict(google("duplicate", 409))
    assert names_other_conflict(google("conflict", 409))
    assert not names_other_conflict(b'{"code": 409}') and not names_other_conflict(None)


# --- the outcome table: one classifier, every consumer (breaker, retries, Sentry, alerts) ---

FIVE_XX = frozenset(range(500, 600))


@pytest.mark.parametrize(("status", "error", "count", "kind", "reached", "reported", "failed"), [
    # answers: the breaker counts the route's failure statuses; 429 is a rate signal only
    (200, None, BreakerCount.SUCCESS, 200, True, False, False),
    (404, None, BreakerCount.SUCCESS, 404, True, False, False),
    (429, None, BreakerCount.IGNORED, 429, True, False, False),
    (503, None, BreakerCount.FAILURE, 503, True, False, True),
    (502, None, BreakerCount.FAILURE, 502, True, False, True),  # relayed: the upstream's own 502, not reported
    # no answer: the request never reached the upstream (a POST may be repeated)
    (502, "connection_refused", BreakerCount.FAILURE, CONNECT_ERROR, False, True, True),
    (502, "dns_error", BreakerCount.FAILURE, CONNECT_ERROR, False, True, True),
    (504, "connection_timeout", BreakerCount.FAILURE, CONNECT_ERROR, False, True, True),
    (502, "tls_certificate_error", BreakerCount.FAILURE, TLS_ERROR, False, True, True),
    (502, "tls_protocol_error", BreakerCount.FAILURE, TLS_ERROR, False, True, True),
    # no answer, but the request may have been processed
    (504, "http_response_timeout", BreakerCount.FAILURE, TIMEOUT, True, True, True),
    (502, "http_response_incomplete", BreakerCount.FAILURE, RESET, True, True, True),
    (502, "http_protocol_error", BreakerCount.FAILURE, RESET, True, True, True),
    (502, "connection_terminated", BreakerCount.FAILURE, RESET, True, True, True),
    # the sidecar's own answers say nothing about the upstream
    (413, "http_request_error", BreakerCount.IGNORED, "http_request_error", True, False, None),
    (429, "http_request_denied", BreakerCount.IGNORED, "http_request_denied", True, False, None),
    (503, "http_request_denied", BreakerCount.IGNORED, "http_request_denied", True, False, None),
    (404, "destination_not_found", BreakerCount.IGNORED, "destination_not_found", True, False, None),
    (500, "proxy_internal_error", BreakerCount.IGNORED, "proxy_internal_error", True, False, None),
    (499, "client_disconnected", BreakerCount.IGNORED, "client_disconnected", True, False, None),
])
def test_one_classifier_says_what_an_outcome_means_to_everyone(
        status: int, error: str | None, count: BreakerCount, kind: str | int, reached: bool, reported: bool,
        failed: bool | None) -> None:
    assert breaker_count(status if error is None else 0, error, FIVE_XX) == count
    facts = retry_facts(status if error is None else 0, error)
    assert (facts.kind, facts.reached_upstream) == (kind, reached)
    assert worth_reporting(status, error) == reported
    assert upstream_failed(status, error) == failed


def test_a_fast_failed_request_counts_against_the_upstream_but_is_not_reported() -> None:
    assert upstream_failed(503, CircuitOpen.proxy_status) is True
    assert not worth_reporting(503, CircuitOpen.proxy_status)
    # a body cut short after the head went out: a failure for the error rate, no Sentry report
    assert upstream_failed(200, "connection_read_timeout") is True
    assert not worth_reporting(504, "connection_read_timeout")


def test_every_upstream_error_type_is_in_the_table() -> None:
    """An UpstreamError the sidecar can raise must mean "no answer" to the classifier (a breaker failure)."""
    for error in (UpstreamConnectError, UpstreamResponseError, UpstreamTimeout):
        assert error.proxy_status in NO_ANSWER
    assert RequestRejected.proxy_status not in NO_ANSWER


def test_slow_calls_count_as_failures_when_configured() -> None:
    assert breaker_count(200, None, FIVE_XX, seconds=3.0, slow_call=2.0) == BreakerCount.FAILURE
    assert breaker_count(200, None, FIVE_XX, seconds=3.0, slow_call=0.0) == BreakerCount.SUCCESS
    assert breaker_count(429, None, FIVE_XX, seconds=3.0, slow_call=2.0) == BreakerCount.IGNORED


def test_throttling_is_told_by_the_status_and_only_a_403_needs_its_body() -> None:
    assert body_decides(403) and not body_decides(429) and not body_decides(200)
    facts = retry_facts(403, None, 2.0, throttled=True)
    assert (facts.kind, facts.retry_after, facts.throttled) == (403, 2.0, True)
