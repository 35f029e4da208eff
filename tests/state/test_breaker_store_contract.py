"""One behavioural suite for every breaker store backend: memory, and Redis (a real redis-server).

Time is a FakeClock passed to the store, so open times are exercised without sleeping.
``await store.flush()`` stands where a batching backend would send its queued outcomes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.clock import FakeClock
from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition
from proxy.policy.breaker import Action, State
from proxy.state.base import BreakerStore
from proxy.state.memory import MemoryBreakerStore
from proxy.state.redis.breakers import RedisBreakerStore

KEY = "twilio/twilio_sms"
POLICY = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0)

StoreFactory = Callable[[FakeClock, pytest.FixtureRequest], Awaitable[BreakerStore]]


async def memory_store(clock: FakeClock, request: pytest.FixtureRequest) -> BreakerStore:
    return MemoryBreakerStore(clock=clock, random=lambda: 0.5)


async def redis_store(clock: FakeClock, request: pytest.FixtureRequest) -> BreakerStore:
    # A generous timeout: these tests hold the Lua to the rules, not Redis to its latency.
    return RedisBreakerStore(request.getfixturevalue("redis_url"), clock=clock, random=lambda: 0.5, timeout=2.0)


async def cluster_store(clock: FakeClock, request: pytest.FixtureRequest) -> BreakerStore:
    # The same store on a 3-master Redis Cluster (redis+cluster://): every script on one slot.
    return RedisBreakerStore(request.getfixturevalue("cluster_url"), clock=clock, random=lambda: 0.5, timeout=2.0)


BACKENDS: dict[str, StoreFactory] = {"memory": memory_store, "redis": redis_store, "cluster": cluster_store}


@pytest.fixture(params=sorted(BACKENDS))
async def store_and_clock(request: pytest.FixtureRequest) -> AsyncIterator[tuple[BreakerStore, FakeClock]]:
    clock = FakeClock()
    store = await BACKENDS[request.param](clock, request)
    await store.start()
    yield store, clock
    await store.close()
    if isinstance(store, RedisBreakerStore):  # a Redis error would have hidden behind the local fallback
        assert (store.backend_up, store.backend_failures) == (True, 0)


async def fail(store: BreakerStore, times: int, probe: bool = False) -> None:
    for _ in range(times):
        store.record(KEY, POLICY, True, probe)
    await store.flush()


async def test_a_new_breaker_is_closed_and_admits_freely(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_and_clock
    view = store.view(KEY)
    assert (view.state, view.admits_freely) == (State.CLOSED, True)


async def test_opens_after_consecutive_failures_and_tells_the_listener_once(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    seen: list[BreakerTransition] = []
    store.emit_to(seen.append)
    await fail(store, 2)
    store.record(KEY, POLICY, False, False)
    await fail(store, 2)
    assert store.view(KEY).state == State.CLOSED
    await fail(store, 1)
    view = store.view(KEY)
    assert (view.state, view.open_until, view.reason) == (State.OPEN, clock.now() + 30, "3 consecutive failures")
    assert [(t.from_state, t.to_state) for t in seen] == [("closed", "open")]


async def test_open_rejects_until_the_time_is_up_then_one_probe_closes_it(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    await fail(store, 3)
    clock.advance(10)
    rejected = await store.admit(KEY, POLICY)
    assert (rejected.allowed, rejected.retry_after) == (False, pytest.approx(20))
    clock.advance(20)
    probe = await store.admit(KEY, POLICY)
    assert (probe.allowed, probe.probe) == (True, True)
    assert (await store.admit(KEY, POLICY)).allowed is False, "exactly one probe"
    assert store.view(KEY).state == State.HALF_OPEN
    store.record(KEY, POLICY, False, True)
    await store.flush()
    assert store.view(KEY).state == State.CLOSED


async def test_a_fresh_read_counts_the_probes_in_flight_fleet_wide(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    """What the status page shows while a breaker is half-open: probes admitted and not yet answered."""
    store, clock = store_and_clock
    policy = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0, half_open_probes=2)
    for _ in range(3):
        store.record(KEY, policy, True, False)
    await store.flush()
    assert (await store.views([KEY]))[0].probes_in_flight == 0
    clock.advance(30)
    assert (await store.admit(KEY, policy)).probe
    assert (await store.admit(KEY, policy)).probe
    (view,) = await store.views([KEY])
    assert (view.state, view.probes_in_flight) == (State.HALF_OPEN, 2)
    store.record(KEY, policy, False, True)
    await store.flush()
    assert (await store.views([KEY]))[0].probes_in_flight == 1
    store.record(KEY, policy, False, True)
    await store.flush()
    (view,) = await store.views([KEY])
    assert (view.state, view.probes_in_flight) == (State.CLOSED, 0)


async def test_failed_probe_reopens(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    await fail(store, 3)
    clock.advance(30)
    assert (await store.admit(KEY, POLICY)).probe
    await fail(store, 1, probe=True)
    view = store.view(KEY)
    assert (view.state, view.reason) == (State.OPEN, "probe failed")


async def test_operator_overrides(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_and_clock
    seen: list[BreakerTransition] = []
    store.emit_to(seen.append)
    forced = await store.force(KEY, POLICY, Action.FORCE_OPEN, "alice")
    assert (forced.to_state, store.view(KEY).state, store.view(KEY).forced_by) == ("forced_open", State.FORCED_OPEN,
                                                                                   "alice")
    assert (await store.admit(KEY, POLICY)).allowed is False
    await store.force(KEY, POLICY, Action.DISABLE, "alice")
    await fail(store, 10)
    assert store.view(KEY).state == State.DISABLED
    await store.force(KEY, POLICY, Action.RESET, "bob")
    assert (store.view(KEY).state, store.view(KEY).forced_by) == (State.CLOSED, "")
    assert [t.to_state for t in seen] == ["forced_open", "disabled", "closed"]


async def test_views_for_the_admin_api(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, _ = store_and_clock
    await fail(store, 3)
    other = "google/google_calendar_events"
    views = await store.views([KEY, other])
    assert [(v.key, v.state) for v in views] == [(KEY, State.OPEN), (other, State.CLOSED)]
