"""One behavioural suite for every rate-limit store backend: memory, and Redis (a real redis-server).

Both get a FakeClock; the Redis store passes its ``now`` to the script, so Redis is as
deterministic as memory. The rules count whole microseconds, so every expected value is exact:
worked out by hand (in the comments) and compared with ``==``. A verdict's seconds are its
microseconds / 1e6, which is why a reset of 3 intervals of 0.1 s is written ``3 / 10``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.clock import FakeClock
from proxy.config.policy_values import KeyKind, LimitPolicy, Rate
from proxy.policy import ratelimit
from proxy.policy.ratelimit import Check, Verdict
from proxy.state.base import LimitStore
from proxy.state.memory_limits import MemoryLimitStore
from proxy.state.redis.limits import RedisLimitStore

StoreFactory = Callable[[FakeClock, pytest.FixtureRequest], Awaitable[LimitStore]]


async def memory_store(clock: FakeClock, request: pytest.FixtureRequest) -> LimitStore:
    return MemoryLimitStore(clock)


async def redis_store(clock: FakeClock, request: pytest.FixtureRequest) -> LimitStore:
    # A generous timeout: these tests hold the Lua to the rules, not Redis to its latency.
    return RedisLimitStore(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:8]}:", clock=clock,
                           timeout=2.0)


async def cluster_store(clock: FakeClock, request: pytest.FixtureRequest) -> LimitStore:
    # The same store on a 3-master Redis Cluster (redis+cluster://): every script on one slot.
    return RedisLimitStore(request.getfixturevalue("cluster_url"), prefix=f"t{uuid.uuid4().hex[:8]}:", clock=clock,
                           timeout=2.0)


BACKENDS: dict[str, StoreFactory] = {"memory": memory_store, "redis": redis_store, "cluster": cluster_store}


@pytest.fixture(params=sorted(BACKENDS))
async def store_and_clock(request: pytest.FixtureRequest) -> AsyncIterator[tuple[LimitStore, FakeClock]]:
    clock = FakeClock()
    store = await BACKENDS[request.param](clock, request)
    await store.start()
    yield store, clock
    await store.close()
    if isinstance(store, RedisLimitStore):
        assert store.backend_failures == 0


def check(name: str, limit: int, per: float, burst: int, *, group: str = "twilio", shadow: bool = False,
          key: str = "-") -> Check:
    rate = Rate(limit, per, burst)
    return Check(LimitPolicy(name, KeyKind.GLOBAL, rate, shadow=shadow), group, f"{name}:{key}", rate)


def row(verdict: Verdict) -> tuple[bool, int, float, float]:
    return verdict.allowed, verdict.remaining, verdict.reset, verdict.retry_after


async def one(store: LimitStore, c: Check) -> tuple[bool, int, float, float]:
    (verdict,) = await store.acquire([c])
    return row(verdict)


async def test_a_fresh_bucket_passes_burst_plus_one_at_once_then_one_per_interval(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("per_second", 10, 1.0, 9)  # interval 0.1 s, tolerance 0.9 s
    burst = [await one(store, c) for _ in range(10)]
    # The k-th call (k = 1..10) moves the TAT to now + 0.1 k: 10 - k calls left, full again in 0.1 k s.
    assert burst == [(True, 10 - k, k / 10, 0.0) for k in range(1, 11)]
    # TAT now + 1.0: the next call may pass at TAT - tolerance = now + 0.1.
    assert await one(store, c) == (False, 0, 1.0, 0.1)
    clock.advance(0.1)
    assert await one(store, c) == (True, 0, 1.0, 0.0)
    assert await one(store, c) == (False, 0, 1.0, 0.1)


async def test_without_burst_calls_are_paced_one_per_interval(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("paced", 4, 1.0, 0)  # interval 0.25 s, no tolerance
    assert await one(store, c) == (True, 0, 0.25, 0.0)
    assert await one(store, c) == (False, 0, 0.25, 0.25)
    clock.advance(0.125)
    assert await one(store, c) == (False, 0, 0.125, 0.125)
    clock.advance(0.125)
    for _ in range(8):
        assert await one(store, c) == (True, 0, 0.25, 0.0)
        assert await one(store, c) == (False, 0, 0.25, 0.25)
        clock.advance(0.25)


async def test_no_window_of_per_seconds_admits_more_than_limit_plus_burst(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("steady", 8, 1.0, 3)  # interval 0.125 s, tolerance 0.375 s
    ticks, tick = 30 * 64, 1 / 64  # one call every 1/64 s for 30 s
    admitted = []
    for i in range(ticks):
        if (await store.acquire([c]))[0].allowed:
            admitted.append(i)
        clock.advance(tick)
    # The k-th of the first calls leaves TAT = start + 0.125 k at tick k - 1; tick k passes while
    # 0.125 (k + 1) - 0.375 <= k / 64, i.e. for k <= 3: ticks 0-3 pass (burst + 1). From then on the
    # TAT runs 0.375 s ahead and one call passes every 0.125 s = 8 ticks: 8, 16, ... 1912.
    assert admitted == [0, 1, 2, 3, *range(8, ticks, 8)]
    per_window = [sum(1 for i in admitted if start <= i < start + 64) for start in range(ticks - 64)]
    assert max(per_window) == 8 + 3
    assert per_window[0] == 11, "the first second spends the whole burst"


async def test_a_request_rejected_by_one_limit_charges_none(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_and_clock
    wide, narrow = check("wide", 4, 1.0, 3), check("narrow", 1, 60.0, 0)
    assert await one(store, narrow) == (True, 0, 60.0, 0.0)
    verdicts = await store.acquire([wide, narrow])
    assert [row(v) for v in verdicts] == [(True, 3, 0.25, 0.0), (False, 0, 60.0, 60.0)]
    assert not ratelimit.passed([wide, narrow], verdicts)
    # Had the rejected request charged ``wide``, this would leave 2 and reset in 0.5 s.
    assert await one(store, wide) == (True, 3, 0.25, 0.0)
    assert await one(store, narrow) == (False, 0, 60.0, 60.0)


async def test_a_shadow_limit_never_blocks_and_is_not_charged_when_it_would_reject(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    enforced, shadow = check("enforced", 4, 1.0, 3), check("shadow", 1, 60.0, 0, shadow=True)
    first = await store.acquire([enforced, shadow])
    assert [row(v) for v in first] == [(True, 3, 0.25, 0.0), (True, 0, 60.0, 0.0)]
    second = await store.acquire([enforced, shadow])
    assert [row(v) for v in second] == [(True, 2, 0.5, 0.0), (False, 0, 60.0, 60.0)]
    assert ratelimit.passed([enforced, shadow], second), "the shadow limit only reports"
    assert await one(store, enforced) == (True, 1, 0.75, 0.0), "the request passed, so it was charged"
    # Charging the rejected shadow bucket would have moved its TAT to +120 s.
    clock.advance(60)
    assert await one(store, shadow) == (True, 0, 60.0, 0.0)
    # An enforcing rejection charges the shadow limit no more than any other.
    spent = check("spent", 1, 60.0, 0)
    assert await one(store, spent) == (True, 0, 60.0, 0.0)
    other_shadow = check("other_shadow", 4, 1.0, 3, shadow=True)
    assert [row(v) for v in await store.acquire([spent, other_shadow])] == [(False, 0, 60.0, 60.0),
                                                                            (True, 3, 0.25, 0.0)]
    assert await one(store, other_shadow) == (True, 3, 0.25, 0.0)


async def test_remaining_and_reset_follow_the_bucket(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("org", 4, 1.0, 3)  # interval 0.25 s, tolerance 0.75 s: 4 at once
    assert [await one(store, c) for _ in range(3)] == [(True, 3, 0.25, 0.0), (True, 2, 0.5, 0.0),
                                                       (True, 1, 0.75, 0.0)]
    clock.advance(0.5)  # TAT +0.75 is now +0.25 ahead: one call's worth spent
    assert await one(store, c) == (True, 2, 0.5, 0.0)
    clock.advance(2.0)  # TAT long past: the bucket is full again
    assert [await one(store, c) for _ in range(4)] == [(True, 3, 0.25, 0.0), (True, 2, 0.5, 0.0),
                                                       (True, 1, 0.75, 0.0), (True, 0, 1.0, 0.0)]
    assert await one(store, c) == (False, 0, 1.0, 0.25)
    clock.advance(0.1)
    assert await one(store, c) == (False, 0, 0.9, 0.15)


async def test_hold_blocks_for_the_given_seconds_then_paces_again(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    a, b = check("a", 4, 1.0, 3), check("b", 1, 2.0, 0)
    await store.hold([a, b], 5.0)
    # TAT = now + 5 + tolerance: a at +5.75, b at +5.
    assert [row(v) for v in await store.acquire([a, b])] == [(False, 0, 5.75, 5.0), (False, 0, 5.0, 5.0)]
    clock.advance(4.75)
    assert [row(v) for v in await store.acquire([a, b])] == [(False, 0, 1.0, 0.25), (False, 0, 0.25, 0.25)]
    clock.advance(0.25)
    assert [row(v) for v in await store.acquire([a, b])] == [(True, 0, 1.0, 0.0), (True, 0, 2.0, 0.0)]
    assert await one(store, a) == (False, 0, 1.0, 0.25), "back to the steady pace, the burst still spent"


async def test_a_shorter_hold_does_not_shorten_a_longer_one(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("a", 4, 1.0, 3)
    await store.hold([c], 10.0)
    await store.hold([c], 2.0)
    assert await one(store, c) == (False, 0, 10.75, 10.0)
    clock.advance(10.0)
    await store.hold([], 1.0)
    assert await store.acquire([]) == []
    assert await one(store, c) == (True, 0, 1.0, 0.0)


async def test_groups_and_buckets_are_independent(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_and_clock
    twilio_acme = check("per_org", 1, 60.0, 0, group="twilio", key="acme")
    stripe_acme = check("per_org", 1, 60.0, 0, group="stripe", key="acme")
    twilio_globex = check("per_org", 1, 60.0, 0, group="twilio", key="globex")
    assert [await one(store, c) for c in (twilio_acme, stripe_acme, twilio_globex)] == [(True, 0, 60.0, 0.0)] * 3
    assert [await one(store, c) for c in (twilio_acme, stripe_acme, twilio_globex)] == [(False, 0, 60.0, 60.0)] * 3


async def test_a_slow_rate_paces_in_whole_intervals(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("per_15m", 100, 900.0, 0)  # one every 9 s
    assert await one(store, c) == (True, 0, 9.0, 0.0)
    assert await one(store, c) == (False, 0, 9.0, 9.0)
    clock.advance(8.5)
    assert await one(store, c) == (False, 0, 0.5, 0.5)
    clock.advance(0.5)
    assert await one(store, c) == (True, 0, 9.0, 0.0)


async def test_a_minute_rate_with_its_whole_limit_as_burst(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("per_minute", 600, 60.0, 599)  # interval 0.1 s, tolerance 59.9 s: 600 at once
    burst = [await one(store, c) for _ in range(600)]
    assert burst == [(True, 599 - k, (k + 1) / 10, 0.0) for k in range(600)]
    assert await one(store, c) == (False, 0, 60.0, 0.1)
    clock.advance(30.0)  # 300 intervals back
    assert [(await one(store, c))[0] for _ in range(301)] == [True] * 300 + [False]


async def test_an_interval_of_no_whole_microseconds_is_rounded_up(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    c = check("seven", 7, 60.0, 2)  # 60 s / 7 = 8.5714285... s: interval 8.571429 s, tolerance 17.142858 s
    assert [await one(store, c) for _ in range(4)] == [(True, 2, 8.571429, 0.0), (True, 1, 17.142858, 0.0),
                                                       (True, 0, 25.714287, 0.0), (False, 0, 25.714287, 8.571429)]
    clock.advance(8.571428)
    assert await one(store, c) == (False, 0, 17.142859, 0.000001)
    clock.advance(0.000001)
    assert await one(store, c) == (True, 0, 25.714287, 0.0)
