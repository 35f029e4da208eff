"""GCRA maths with a fake clock: exact admission counts over periods and bursts."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from proxy.clock import FakeClock
from proxy.config.policy_values import KeyKind, LimitPolicy, Rate, micros
from proxy.policy.ratelimit import Check, Verdict, blocking, decide, hold, most_restrictive, passed, spend


class Bucket:
    """One bucket driven by the pure functions, as a store would."""

    def __init__(self, rate: Rate, clock: FakeClock) -> None:
        self.rate, self.clock, self.tat = rate, clock, None

    def call(self) -> Verdict:
        verdict, tat = spend(self.tat, micros(self.clock.now()), self.rate)
        if verdict.allowed:
            self.tat = tat
        return verdict


def admitted(bucket: Bucket, calls: int) -> int:
    return sum(bucket.call().allowed for _ in range(calls))


def test_a_fresh_bucket_passes_burst_plus_one_at_once_then_one_per_interval() -> None:
    clock = FakeClock()
    bucket = Bucket(Rate(limit=10, per=1.0, burst=4), clock)
    assert admitted(bucket, 20) == 5
    rejected = bucket.call()
    assert rejected == Verdict(False, 0, pytest.approx(0.5), pytest.approx(0.1))
    clock.advance(0.1)
    assert admitted(bucket, 20) == 1
    clock.advance(0.35)
    assert admitted(bucket, 20) == 3


def test_the_default_burst_lets_a_whole_hourly_quota_go_at_once() -> None:
    clock = FakeClock()
    bucket = Bucket(Rate(limit=1000, per=3600.0, burst=999), clock)
    assert admitted(bucket, 1500) == 1000
    verdict = bucket.call()
    assert not verdict.allowed and verdict.retry_after == pytest.approx(3.6)
    assert verdict.reset == pytest.approx(3600.0)


def test_burst_zero_paces_calls_one_interval_apart() -> None:
    clock = FakeClock()
    bucket = Bucket(Rate(limit=100, per=900.0, burst=0), clock)  # 100 per 15m: one per 9 s
    assert admitted(bucket, 5) == 1
    clock.advance(8.999)
    assert admitted(bucket, 5) == 0
    clock.advance(0.001)
    assert admitted(bucket, 5) == 1


@pytest.mark.parametrize("limit, per, burst", [(10, 1.0, 0), (10, 1.0, 4), (600, 60.0, 99), (7, 3.0, 2)])
def test_no_window_of_one_period_admits_more_than_limit_plus_burst(limit: int, per: float, burst: int) -> None:
    clock = FakeClock()
    bucket = Bucket(Rate(limit, per, burst), clock)
    tick = per / limit / 7
    times = []
    for _ in range(limit * 7 * 3):  # three periods, trying several times per interval
        if bucket.call().allowed:
            times.append(clock.now())
        clock.advance(tick)
    worst = max(sum(1 for t in times if start <= t < start + per) for start in times)
    assert worst == limit + burst
    assert len(times) >= 3 * limit  # and the steady rate is kept, not starved


def test_remaining_counts_the_calls_that_could_still_pass_at_once() -> None:
    clock = FakeClock()
    bucket = Bucket(Rate(limit=5, per=5.0, burst=4), clock)
    assert [bucket.call().remaining for _ in range(5)] == [4, 3, 2, 1, 0]
    clock.advance(2.0)
    assert bucket.call() == Verdict(True, 1, pytest.approx(4.0))


def limit(name: str, shadow: bool = False) -> LimitPolicy:
    return LimitPolicy(name=name, kind=KeyKind.GLOBAL, rate=Rate(1, 1.0, 0), shadow=shadow)


def check(name: str, rate: Rate, shadow: bool = False) -> Check:
    return Check(limit(name, shadow), "twilio", f"{name}:global", rate)


def test_a_request_rejected_by_one_limit_charges_none() -> None:
    now = micros(100.0)
    checks = [check("roomy", Rate(10, 1.0, 9)), check("spent", Rate(1, 1.0, 0))]
    verdicts, charged = decide(checks, [None, now + 500_000], now)
    assert [v.allowed for v in verdicts] == [True, False]
    assert charged == [None, None]
    assert not passed(checks, verdicts) and blocking(checks, verdicts) == 1


def test_a_shadow_limit_never_rejects_and_is_charged_only_when_it_would_pass() -> None:
    now = micros(100.0)
    checks = [check("real", Rate(10, 1.0, 9)), check("trial", Rate(1, 1.0, 0), shadow=True)]
    verdicts, charged = decide(checks, [None, now + 500_000], now)
    assert passed(checks, verdicts) and blocking(checks, verdicts) is None
    assert charged == [now + 100_000, None]
    verdicts, charged = decide(checks, [None, None], now)
    assert charged == [now + 100_000, now + 1_000_000]


def test_the_most_restrictive_limit_is_the_one_with_fewest_calls_left() -> None:
    checks = [check("a", Rate(10, 1.0, 9)), check("b", Rate(3, 1.0, 2)), check("c", Rate(1, 1.0, 0), True)]
    verdicts, _ = decide(checks, [None, None, None], 0)
    assert [v.remaining for v in verdicts] == [9, 2, 0]
    assert most_restrictive(checks, verdicts) == 1  # the shadow limit is not shown to clients


def test_hold_lets_nothing_through_for_the_given_time() -> None:
    clock = FakeClock()
    bucket = Bucket(Rate(limit=10, per=1.0, burst=9), clock)
    bucket.tat = hold(bucket.tat, micros(clock.now()), bucket.rate, 5.0)
    verdict = bucket.call()
    assert not verdict.allowed and verdict.retry_after == pytest.approx(5.0)
    clock.advance(5.0)
    assert admitted(bucket, 20) == 1  # then at the steady pace, not a whole burst at once
    later = micros(clock.now() + 60)
    assert hold(later, micros(clock.now()), bucket.rate, 1.0) == later  # never shortens a wait


def test_intervals_round_up_to_whole_microseconds_so_the_rate_is_never_exceeded() -> None:
    assert Rate(3, 1.0, 0).interval == 333_334
    assert Rate(600, 60.0, 0).interval == 100_000
    assert Rate(100, 900.0, 4).tolerance == 4 * 9_000_000


def test_a_local_share_scales_limit_and_burst() -> None:
    assert Rate(100, 1.0, 20).share(0.25) == Rate(25, 1.0, 5)
    assert Rate(3, 1.0, 0).share(0.1) == Rate(1, 1.0, 0)


def test_the_most_restrictive_limit_is_the_first_with_fewest_left_then_longest_reset() -> None:
    """One pass over the verdicts, as ``min`` over (remaining, -reset) of the enforcing limits would choose."""
    chance = random.Random(7)
    for _ in range(500):
        n = chance.randint(1, 5)
        checks = [check(f"l{i}", Rate(5, 1.0, 4), shadow=chance.random() < 0.3) for i in range(n)]
        verdicts = [Verdict(True, chance.randint(0, 3), chance.choice([0.5, 1.0, 2.0])) for _ in range(n)]
        enforcing = [i for i, c in enumerate(checks) if c.enforcing]
        expected = min(enforcing, key=lambda i: (verdicts[i].remaining, -verdicts[i].reset)) if enforcing else None
        assert most_restrictive(checks, verdicts) == expected


def test_a_check_knows_its_bucket_and_whether_it_enforces_and_compares_by_its_inputs() -> None:
    enforced, trial = check("a", Rate(1, 1.0, 0)), check("a", Rate(1, 1.0, 0), shadow=True)
    assert (enforced.key, enforced.enforcing, trial.enforcing) == (("twilio", "a:global"), True, False)
    assert enforced == check("a", Rate(1, 1.0, 0)) and enforced != trial
    assert replace(enforced, limit=limit("a", shadow=True)).enforcing is False, "derived again from the new inputs"
