"""Retry rules with fixed chance and a fake clock: no event loop, no sleeping."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest

from proxy.config.policy_values import CONNECT_ERROR, TIMEOUT, RetryPolicy
from proxy.policy.retry import (
    RetryBudget,
    RetryFacts,
    backoff,
    body_key,
    decide,
    fetch_duplicate,
    parse_retry_after,
    retryable,
)

POLICY = RetryPolicy()


def middle() -> float:
    return 0.5  # no jitter: the nominal wait


def test_default_backoff_is_one_two_four_seconds_then_capped() -> None:
    assert [backoff(POLICY, n, middle) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize("retry_number", [1, 2, 3])
def test_jitter_stays_within_its_bounds(retry_number: int) -> None:
    nominal = backoff(POLICY, retry_number, middle)
    low, high = backoff(POLICY, retry_number, lambda: 0.0), backoff(POLICY, retry_number, lambda: 0.999999)
    assert low == pytest.approx(nominal * 0.8) and high == pytest.approx(nominal * 1.2, rel=1e-5)


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("7", now) == 7.0
    date = format_datetime(datetime.fromtimestamp(now + 120, tz=timezone.utc), usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(120.0)
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now - 5, tz=timezone.utc), usegmt=True),
                             now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


@pytest.mark.parametrize("value", ["²", "٣", "３", "1.5", "-1", "+3", "1e3", "0x10", "1_0", "nan", "inf", "3 s",
                                   "Wed, ٢١ Oct 2026 07:28:00 GMT", "Wed, 21 Oct 99999 07:28:00 GMT", "Wed, 21 Oct 2026"])
def test_a_retry_after_that_is_not_ascii_digits_or_an_http_date_is_ignored(value: str) -> None:
    assert parse_retry_after(value, 1_800_000_000.0) is None


def test_a_retry_after_of_absurd_length_is_longer_than_any_wait() -> None:
    assert parse_retry_after("9" * 5000, 0.0) == float("inf") and parse_retry_after(" 12\t", 0.0) == 12.0


@pytest.mark.parametrize(("method", "result", "retry"), [
    ("GET", RetryFacts(503), True),
    ("GET", RetryFacts(TIMEOUT), True),
    ("GET", RetryFacts(500), False),                                # not in `on`
    ("POST", RetryFacts(503), False),                               # may have been processed
    ("POST", RetryFacts(TIMEOUT), False),                           # may have sent the SMS
    ("POST", RetryFacts(CONNECT_ERROR, reached_upstream=False), True),
    ("PUT", RetryFacts(503), True),
    ("DELETE", RetryFacts(502), True),
])
def test_side_effects_are_never_repeated(method: str, result: RetryFacts, retry: bool) -> None:
    assert decide(POLICY, method, result, 1, 0.0, False, middle).retry is retry


def test_post_may_repeat_when_declared_idempotent_proven_unprocessed_or_keyed() -> None:
    failed = RetryFacts(429)
    assert not decide(POLICY, "POST", failed, 1, 0.0, False, middle).retry
    assert decide(RetryPolicy(not_processed=frozenset({429})), "POST", failed, 1, 0.0, False, middle).retry
    assert decide(RetryPolicy(idempotent=True), "POST", RetryFacts(503), 1, 0.0, False, middle).retry
    assert decide(POLICY, "POST", RetryFacts(503), 1, 0.0, True, middle).retry


def test_retry_after_is_honoured_and_capped() -> None:
    honoured = decide(POLICY, "GET", RetryFacts(429, retry_after=3.0), 1, 0.0, False, middle)
    assert (honoured.retry, honoured.delay) == (True, 3.0)
    too_long = decide(RetryPolicy(retry_after_max=10), "GET", RetryFacts(503, retry_after=60.0), 1, 0.0, False,
                      middle)
    assert (too_long.retry, too_long.reason) == (False, "retry-after too long")


def test_a_wait_past_the_deadline_fails_fast() -> None:
    policy = RetryPolicy(deadline=5.0)
    assert decide(policy, "GET", RetryFacts(503), 3, 0.5, False, middle).retry  # 0.5 + 4 < 5
    late = decide(policy, "GET", RetryFacts(503), 3, 1.5, False, middle)
    assert (late.retry, late.reason) == (False, "deadline")
    assert decide(policy, "GET", RetryFacts(429, retry_after=6.0), 1, 0.0, False, middle).reason == "deadline"


def test_attempts_run_out() -> None:
    assert decide(POLICY, "GET", RetryFacts(503), 3, 0.0, False, middle).retry
    assert decide(POLICY, "GET", RetryFacts(503), 4, 0.0, False, middle).reason == "attempts exhausted"
    assert decide(RetryPolicy(attempts=0), "GET", RetryFacts(503), 1, 0.0, False, middle).retry is False


def test_budget_allows_a_share_of_requests_plus_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.0)
    for _ in range(50):
        budget.record_request(100.0)
    granted = sum(budget.try_retry(100.0) for _ in range(30))
    assert granted == 10
    floor = RetryBudget(ratio=0.2, min_per_second=1.0, window=10)
    floor.record_request(0.0)
    assert sum(floor.try_retry(0.0) for _ in range(20)) == 10  # 0.2 * 1 + 1/s * 10 s, rounded down


def test_budget_forgets_requests_older_than_its_window() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10)
    for _ in range(10):
        budget.record_request(0.0)
    assert budget.try_retry(5.0)
    assert not budget.try_retry(10.5), "the requests that paid for retries left the window"


def test_rate_limited_matches_429_and_throttling_answers_only() -> None:
    policy = RetryPolicy(on=frozenset({"rate_limited"}), idempotent=True)
    assert retryable(policy, RetryFacts(429))
    assert retryable(policy, RetryFacts(403, throttled=True))
    assert not retryable(policy, RetryFacts(403))  # quotaExceeded and other 403s
    assert not retryable(RetryPolicy(on=frozenset({503})), RetryFacts(403, throttled=True))
    assert decide(policy, "POST", RetryFacts(403, throttled=True), 1, 0.0, False, middle).retry
    assert decide(policy, "POST", RetryFacts(403), 1, 0.0, False, middle).reason == "not retryable"


def test_body_key_makes_a_post_repeatable_only_when_present() -> None:
    policy = RetryPolicy(idempotent_when_body_has="id")
    assert body_key(policy, {"id": "abc123", "summary": "x"}) == "abc123"
    assert body_key(policy, {"summary": "x"}) is None
    assert body_key(policy, {"id": ""}) is None and body_key(policy, {"id": 5}) is None
    assert body_key(policy, None) is None
    assert body_key(RetryPolicy(), {"id": "abc"}) is None


def test_a_409_is_fetched_only_on_a_retry_of_a_keyed_request_on_an_opted_in_route() -> None:
    fetch = RetryPolicy(idempotent_when_body_has="id", on_duplicate="fetch")
    assert fetch_duplicate(fetch, 409, 2, "abc")
    assert not fetch_duplicate(fetch, 409, 1, "abc")  # the first attempt: the id was taken before
    assert not fetch_duplicate(fetch, 409, 2, None)
    assert not fetch_duplicate(fetch, 500, 2, "abc")
    assert not fetch_duplicate(RetryPolicy(idempotent_when_body_has="id"), 409, 2, "abc")


def test_budget_counts_requests_of_the_same_second_in_one_bucket_and_moves_its_window_on() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10)
    for now in (0.1, 0.5, 0.9, 1.2, 12.0, 12.5):
        budget.record_request(now)
    assert [list(b) for b in budget._buckets] == [[12, 2, 0]], "seconds 0 and 1 left the window at second 12"
    assert budget.try_retry(12.6) and not budget.try_retry(12.7)
