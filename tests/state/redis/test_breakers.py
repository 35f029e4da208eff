"""What only the Redis store does: replicas sharing breakers, batching, and living without Redis.

Two stores on one redis-server stand for two replicas. Waits poll with a deadline; nothing
sleeps a fixed time to let something happen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.clock import FakeClock
from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition
from proxy.policy.breaker import Action, State
from proxy.state.redis.breakers import RedisBreakerStore
from proxy.state.redis.client import CONFIRM_FACTOR
from tests.redis_server import RedisServer

KEY = "twilio/twilio_sms"
POLICY = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0)

MakeStore = Callable[..., Awaitable[RedisBreakerStore]]


async def eventually(condition: Callable[[], bool], deadline: float = 1.0) -> float:
    """Poll ``condition`` until it holds; fail after ``deadline`` seconds. Returns the time it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline:
            raise AssertionError(f"not true within {deadline}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
async def make_store(redis_url: str) -> AsyncIterator[MakeStore]:
    """Start stores on the test's Redis (or ``url``); all are closed after the test."""
    started: list[RedisBreakerStore] = []

    async def make(url: str = redis_url, **options: Any) -> RedisBreakerStore:
        options.setdefault("random", lambda: 0.5)
        store = RedisBreakerStore(url, **options)
        await store.start()
        started.append(store)
        return store

    yield make
    for store in started:
        await store.close()


async def open_breaker(store: RedisBreakerStore, key: str = KEY) -> None:
    for _ in range(POLICY.consecutive_failures):
        store.record(key, POLICY, True, False)
    await store.flush()
    assert store.view(key).state == State.OPEN


async def test_a_breaker_opened_through_one_replica_is_open_at_the_other_at_once(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    assert b.view(KEY).state == State.CLOSED
    await open_breaker(a)
    took = await eventually(lambda: b.view(KEY).state == State.OPEN)
    assert b.view(KEY) == a.view(KEY)
    assert took < 0.5, "published, not waiting for the refresh"


async def test_half_open_admits_exactly_the_probes_across_replicas(make_store: MakeStore) -> None:
    clock = FakeClock()
    policy = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0, half_open_probes=2)
    a, b = await make_store(clock=clock), await make_store(clock=clock)
    for _ in range(3):
        a.record(KEY, policy, True, False)
    await a.flush()
    await eventually(lambda: b.view(KEY).state == State.OPEN)
    clock.advance(30)
    admissions = await asyncio.gather(*[(a if i % 2 else b).admit(KEY, policy) for i in range(20)])
    assert sum(admission.allowed for admission in admissions) == 2
    assert all(admission.probe for admission in admissions if admission.allowed)
    assert sum(admission.transition is not None for admission in admissions) == 1


async def open_at_both(make_store: MakeStore, clock: FakeClock,
                        policy: BreakerPolicy) -> tuple[RedisBreakerStore, RedisBreakerStore]:
    a, b = await make_store(clock=clock), await make_store(clock=clock)
    for _ in range(policy.consecutive_failures):
        a.record(KEY, policy, True, False)
    await a.flush()
    await eventually(lambda: b.view(KEY).state == State.OPEN)
    return a, b


@pytest.mark.parametrize("pool", ["cold", "warm"])
async def test_a_burst_when_open_time_ends_admits_exactly_the_probes_across_replicas(make_store: MakeStore,
                                                                                    pool: str) -> None:
    """Every waiting caller of the fleet arrives at once when an open breaker's time ends: 300 per replica."""
    clock = FakeClock()
    policy = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0, half_open_probes=2)
    a, b = await open_at_both(make_store, clock, policy)
    if pool == "warm":  # every connection of both pools opened and used
        await asyncio.gather(*[store.views([KEY]) for store in (a, b) for _ in range(32)])
    clock.advance(30)
    admissions = await asyncio.gather(*[(a if i % 2 else b).admit(KEY, policy) for i in range(600)])
    assert sum(admission.allowed for admission in admissions) == 2
    assert a.backend_up and b.backend_up


async def test_a_late_event_loop_never_lets_a_replica_admit_probes_of_its_own(make_store: MakeStore) -> None:
    """The loop stalls past the admissions' time limit while Redis answers in time: those calls time out,
    yet no replica takes Redis for down and decides probes alone."""
    clock = FakeClock()
    policy = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0, half_open_probes=2)
    a, b = await open_at_both(make_store, clock, policy)
    clock.advance(30)

    async def stall() -> None:
        await asyncio.sleep(0)
        time.sleep(0.05 * CONFIRM_FACTOR * 1.5)  # the whole event loop is late, as on a saturated host

    *admissions, _ = await asyncio.gather(*[(a if i % 2 else b).admit(KEY, policy) for i in range(40)], stall())
    assert sum(admission.allowed for admission in admissions) <= 2
    assert a.backend_up and b.backend_up


async def test_each_transition_is_emitted_once_by_the_replica_that_made_it(make_store: MakeStore) -> None:
    clock = FakeClock()
    a, b = await make_store(clock=clock), await make_store(clock=clock)
    seen: dict[str, list[BreakerTransition]] = {"a": [], "b": []}
    a.emit_to(seen["a"].append)
    b.emit_to(seen["b"].append)
    # Both replicas see the same failures at once: one of their batches opens the breaker.
    for _ in range(2):
        a.record(KEY, POLICY, True, False)
        b.record(KEY, POLICY, True, False)
    await asyncio.gather(a.flush(), b.flush())
    await eventually(lambda: a.view(KEY).state == b.view(KEY).state == State.OPEN)
    clock.advance(30)
    admissions = await asyncio.gather(a.admit(KEY, POLICY), b.admit(KEY, POLICY))
    prober = a if admissions[0].allowed else b
    prober.record(KEY, POLICY, False, True)
    await prober.flush()
    await eventually(lambda: a.view(KEY).state == b.view(KEY).state == State.CLOSED)
    fleet = sorted(seen["a"] + seen["b"], key=lambda t: t.at)
    assert [(t.from_state, t.to_state) for t in fleet] == [("closed", "open"), ("open", "half_open"),
                                                            ("half_open", "closed")]


async def test_an_operator_action_through_one_replica_shows_at_the_other(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    b.view(KEY)
    transition = await a.force(KEY, POLICY, Action.FORCE_OPEN, "alice")
    assert (transition.from_state, transition.to_state, transition.forced_by) == ("closed", "forced_open", "alice")
    await eventually(lambda: b.view(KEY).state == State.FORCED_OPEN)
    assert b.view(KEY).forced_by == "alice"
    assert (await b.admit(KEY, POLICY)).allowed is False
    await b.force(KEY, POLICY, Action.RESET, "bob")
    await eventually(lambda: a.view(KEY).state == State.CLOSED)


async def test_a_probe_outcome_is_sent_at_once(make_store: MakeStore) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock, flush_interval=30.0)
    await open_breaker(store)
    clock.advance(30)
    assert (await store.admit(KEY, POLICY)).probe
    store.record(KEY, POLICY, False, True)
    await eventually(lambda: store.view(KEY).state == State.CLOSED, deadline=0.5)


async def test_a_failure_that_may_open_the_breaker_is_sent_at_once(make_store: MakeStore) -> None:
    a, b = await make_store(flush_interval=30.0), await make_store()
    for _ in range(POLICY.consecutive_failures):
        a.record(KEY, POLICY, True, False)
    took = await eventually(lambda: b.view(KEY).state == State.OPEN, deadline=0.5)
    assert took < 0.1


async def test_outcomes_leave_in_batches_not_one_round_trip_each(make_store: MakeStore,
                                                                 redis_server: RedisServer) -> None:
    store = await make_store(flush_interval=0.05)
    policy = BreakerPolicy(failure_rate=0.5, min_calls=10_000)  # keeps per-second buckets: every call shows
    others = ["google/calendar", "stripe/charges"]
    with redis_server.client() as client:
        before = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        started = time.monotonic()
        for i in range(1000):  # about 0.5 s of traffic on three breakers, none failing
            store.record(KEY, policy, False, False)
            store.record(others[i % 2], policy, False, False)
            if i % 20 == 19:
                await asyncio.sleep(0.01)
        await store.flush()
        elapsed = time.monotonic() - started
        calls = client.info("commandstats")["cmdstat_evalsha"]["calls"] - before
        buckets = client.hgetall(f"rp:{{{KEY}}}:breaker")
    flushes = elapsed / 0.05 + 2
    assert calls <= 3 * flushes, f"{calls} scripts for 2000 outcomes in {elapsed:.2f}s"
    assert sum(int(v.split(",")[0]) for f, v in buckets.items() if f.startswith("w:")) == 1000, "every call counted"


async def test_a_half_open_breaker_with_no_slot_left_rejects_without_asking_again(make_store: MakeStore,
                                                                                   redis_server: RedisServer) -> None:
    clock = FakeClock()
    policy = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0, half_open_probes=2)
    store = await make_store(clock=clock)
    for _ in range(3):
        store.record(KEY, policy, True, False)
    await store.flush()
    clock.advance(30)
    assert [(await store.admit(KEY, policy)).probe for _ in range(2)] == [True, True]
    with redis_server.client() as client:
        before = client.info("commandstats")["cmdstat_evalsha"]["calls"]
        rejections = [await store.admit(KEY, policy) for _ in range(100)]
        asked = client.info("commandstats")["cmdstat_evalsha"]["calls"] - before
    assert [(r.allowed, r.retry_after) for r in rejections] == [(False, 30.0)] * 100
    assert asked == 1, "Redis said once that no probe slot is left, until the slots return"
    clock.advance(30)  # the probes never reported: their slots are given back, both of them
    assert [(await store.admit(KEY, policy)).probe for _ in range(3)] == [True, True, False]


async def test_a_change_that_was_not_published_arrives_with_the_refresh(make_store: MakeStore,
                                                                        redis_server: RedisServer) -> None:
    store = await make_store(refresh_interval=0.1)
    assert store.view(KEY).state == State.CLOSED
    with redis_server.client() as client:
        client.hset(f"rp:{{{KEY}}}:breaker", mapping={"state": "forced_open", "forced_by": "redis-cli", "version": 9})
    await eventually(lambda: store.view(KEY).state == State.FORCED_OPEN)
    assert (store.view(KEY).forced_by, store.view(KEY).version) == ("redis-cli", 9)


async def test_one_hash_per_breaker_with_a_hash_tag_and_the_window_pruned(make_store: MakeStore,
                                                                          redis_server: RedisServer) -> None:
    clock = FakeClock(1_800_000_000.25)
    policy = BreakerPolicy(consecutive_failures=0, failure_rate=0.5, window=10, min_calls=100)
    store = await make_store(clock=clock, prefix="test:")
    for _ in range(12):
        store.record(KEY, policy, True, False)
        store.record(KEY, policy, False, False)
        clock.advance(1)
    await store.flush()
    with redis_server.client() as client:
        assert client.keys("*") == ["test:{twilio/twilio_sms}:breaker"]
        fields = client.hgetall("test:{twilio/twilio_sms}:breaker")
    assert sorted(f for f in fields if f.startswith("w:")) == [f"w:{1_800_000_002 + s}" for s in range(10)]
    assert fields["w:1800000011"] == "2,1"
    assert (fields["state"], fields["failures"], fields["version"]) == ("closed", "0", "0")


async def test_without_redis_breakers_work_locally_and_share_again_when_it_returns(make_store: MakeStore,
                                                                                   tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        timeout = 0.05
        options = {"timeout": timeout, "retry_interval": 0.2}
        a, b = await make_store(server.url, **options), await make_store(server.url, **options)
        changes: list[bool] = []
        a.emit_backend_to(changes.append)
        await open_breaker(a)
        await eventually(lambda: b.view(KEY).state == State.OPEN)

        server.kill()
        other = "google/calendar"
        calls: dict[str, Callable[[], Any]] = {
            "view": lambda: a.view(KEY), "admit": lambda: a.admit(KEY, POLICY),
            "record": lambda: a.record(other, POLICY, True, False), "flush": a.flush,
            "views": lambda: a.views([KEY, other]), "force": lambda: a.force("stripe/charges", POLICY,
                                                                             Action.DISABLE, "alice"),
            "other replica": lambda: b.admit(other, POLICY),
        }
        slowest, slowest_call = 0.0, ""
        for _ in range(5):
            for name, call in calls.items():
                started = time.monotonic()
                result = call()
                if asyncio.iscoroutine(result):
                    await result
                if time.monotonic() - started > slowest:
                    slowest, slowest_call = time.monotonic() - started, name
        assert slowest < timeout + 0.1, f"{slowest_call} waited {slowest:.3f}s on a dead Redis"
        await eventually(lambda: not a.backend_up and not b.backend_up)
        assert changes == [False] and a.backend_failures >= 1
        assert a.view(KEY).state == State.OPEN, "what was open stays open"
        assert (await a.admit(KEY, POLICY)).allowed is False
        assert a.view(other).state == State.OPEN, "local failures open a local breaker"
        assert a.view("stripe/charges").state == State.DISABLED, "an operator action applies locally"

        server.restart()
        await eventually(lambda: a.backend_up and b.backend_up, deadline=5.0)
        assert changes == [False, True]
        assert a.view(KEY).state == State.CLOSED, "Redis is the truth again (this one restarted empty)"
        await open_breaker(a, other)
        await eventually(lambda: b.view(other).state == State.OPEN)
    finally:
        server.stop()


async def test_a_hung_redis_costs_a_probe_admission_the_confirmed_timeout_once(make_store: MakeStore,
                                                                               tmp_path: Path) -> None:
    """The admit waits CONFIRM_FACTOR timeouts, then a PING as long confirms the outage: only then does
    the local breaker decide. Every later call is decided locally at once."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        clock = FakeClock()
        store = await make_store(server.url, clock=clock, timeout=0.05, retry_interval=0.1)
        await open_breaker(store)
        clock.advance(30)
        server.pause()  # SIGSTOP: connections stay open, nothing answers
        started = time.monotonic()
        probe = await store.admit(KEY, POLICY)
        waited = time.monotonic() - started
        assert 2 * CONFIRM_FACTOR * 0.05 - 0.01 < waited < 2 * CONFIRM_FACTOR * 0.05 + 0.3
        assert (probe.allowed, probe.probe, store.backend_up) == (True, True, False), "the local breaker decided"
        started = time.monotonic()
        assert (await store.admit(KEY, POLICY)).allowed is False
        assert time.monotonic() - started < 0.01, "no second wait"
        server.resume()
        await eventually(lambda: store.backend_up, deadline=5.0)
        # The admit that timed out still ran once Redis woke up (a timeout cannot take a command back):
        # Redis holds a probe slot nobody uses, given back after open_for. The view is Redis's again.
        assert store.view(KEY).state == State.HALF_OPEN
        assert await store.views([KEY]) == [store.view(KEY)]
    finally:
        server.resume()
        server.stop()


async def test_starting_without_redis_runs_locally_until_it_appears(make_store: MakeStore, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    started = time.monotonic()
    store = await make_store(server.url, retry_interval=0.1)
    assert time.monotonic() - started < 0.5
    assert store.backend_up is False
    await open_breaker(store)
    server.start()
    try:
        await eventually(lambda: store.backend_up, deadline=5.0)
        assert store.view(KEY).state == State.CLOSED
        await open_breaker(store)
    finally:
        server.stop()


def test_a_redis_password_never_reaches_a_log_line() -> None:
    from proxy.state.redis.client import without_password

    assert without_password("redis://:s3cret@redis.internal:6380/0") == "redis://:***@redis.internal:6380/0"
    assert without_password("rediss://app:s3cret@redis/1") == "rediss://app:***@redis/1"
    assert without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_scripts_flushed_from_redis_are_loaded_again_on_the_way(make_store: MakeStore,
                                                                      redis_server: RedisServer) -> None:
    store = await make_store()
    with redis_server.client() as client:
        client.script_flush()
    await open_breaker(store)  # the record batch meets NOSCRIPT, loads the scripts and runs again
    assert (store.backend_up, store.backend_failures) == (True, 0)
