"""Redis behind Sentinel (``redis+sentinel://``): the stores find the master through the sentinels
and follow it through a failover without a restart.

A real master, replica and three sentinels on loopback (tests/sentinel_servers.py), one set per
test module; the tests ask the sentinels where the master is rather than assume it has not moved.
Waits poll with a deadline; nothing sleeps a fixed time to let something happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from proxy.config.policy_values import KeyKind, LimitPolicy, Rate
from proxy.policy.breaker import State
from proxy.policy.ratelimit import Check
from proxy.state.base import BackendUnavailable
from proxy.state.redis.breakers import RedisBreakerStore
from proxy.state.redis.limits import RedisLimitStore
from proxy.state.redis.webhooks import RedisWebhookStore
from tests.sentinel_servers import SentinelSet, running
from tests.state.redis.test_breakers import POLICY, eventually, open_breaker
from tests.state.test_redis_webhooks import HOOK, inbound

FAILOVER_DEADLINE = 15.0
"""Sentinel's own failover takes a few seconds here (timeouts of 1-2 s); the stores follow within one more."""


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with running(tmp_path_factory.mktemp("sentinel")) as servers:
        yield servers


def master_client(sentinels: SentinelSet) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=sentinels.master_port(), socket_timeout=5, decode_responses=True)


def hourly(limit: int = 1000) -> Check:
    rate = Rate(limit, 3600.0, limit - 1)
    return Check(LimitPolicy("hourly", KeyKind.GLOBAL, rate), "twilio/sms", "hourly:-", rate)


@pytest.fixture
async def stores(sentinels: SentinelSet) -> AsyncIterator[list[RedisBreakerStore | RedisLimitStore | RedisWebhookStore]]:
    started: list[RedisBreakerStore | RedisLimitStore | RedisWebhookStore] = []
    yield started
    for store in started:
        await store.close()


async def test_every_store_works_through_a_sentinel_url(sentinels: SentinelSet, stores: list,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    url = sentinels.url()
    a, b = RedisBreakerStore(url, random=lambda: 0.5), RedisBreakerStore(url, random=lambda: 0.5)
    limits = RedisLimitStore(url, timeout=0.5)
    webhooks = RedisWebhookStore(url, timeout=2.0)
    stores.extend([a, b, limits, webhooks])
    for store in stores:
        await store.start()
        assert store.backend_up
    await open_breaker(a, "sentinel/works")
    await eventually(lambda: b.view("sentinel/works").state == State.OPEN)
    check = hourly()
    before = (await limits.acquire([check]))[0].remaining
    assert (await limits.acquire([check]))[0].remaining == before - 1
    await webhooks.accept(inbound("sentinel-works"), dedupe_window=60, log_retention=60)
    assert (await webhooks.stats(HOOK)).depth >= 1
    with master_client(sentinels) as master:
        keys = master.keys("rp:*")
    assert any("sentinel/works" in key for key in keys), "the state is on the master the sentinels name"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_failover_is_followed_without_a_restart(sentinels: SentinelSet, stores: list) -> None:
    url = sentinels.url()
    a = RedisBreakerStore(url, random=lambda: 0.5, retry_interval=0.2)
    b = RedisBreakerStore(url, random=lambda: 0.5, retry_interval=0.2)
    limits = RedisLimitStore(url, timeout=0.5, retry_interval=0.2)
    stores.extend([a, b, limits])
    for store in stores:
        await store.start()
    check = hourly(10_000)
    await limits.acquire([check])
    old = sentinels.master_port()

    sentinels.failover()
    answered = fell_back = 0
    end = time.monotonic() + FAILOVER_DEADLINE
    while sentinels.master_port() == old:  # requests keep flowing while Sentinel moves the master
        assert time.monotonic() < end, "Sentinel did not fail over"
        try:
            await limits.acquire([check])
            answered += 1
        except BackendUnavailable:
            fell_back += 1  # the limiter's documented fallback: on_backend_error decides
        await asyncio.sleep(0.01)
    new = sentinels.master_port()
    assert new != old

    # Within a few seconds every store is on the new master: a breaker opened now reaches the other
    # replica through the new master, and the rate limit counts there.
    with redis.Redis(host="127.0.0.1", port=new, decode_responses=True) as master:
        attempt = 0

        async def shared() -> bool:
            nonlocal attempt
            attempt += 1
            if not (a.backend_up and b.backend_up and limits.backend_up):
                return False
            key = f"sentinel/after-{attempt}"
            for _ in range(POLICY.consecutive_failures):
                a.record(key, POLICY, True, False)
            await a.flush()
            await asyncio.sleep(0.05)
            return a.view(key).state == b.view(key).state == State.OPEN and bool(master.keys(f"*{key}*"))

        started = time.monotonic()
        while not await shared():
            assert time.monotonic() - started < 5.0, "the stores did not follow the new master"
            await asyncio.sleep(0.05)
        assert master.execute_command("ROLE")[0] == "master"
        assert await _counts_on(master, limits, check), "the limiter's lane writes to the new master"
    sentinels.wait_until_ready()  # the old master is a replica again, for the next test


async def _counts_on(master: redis.Redis, limits: RedisLimitStore, check: Check) -> bool:
    """An acquire changes the bucket on ``master`` (the lane writes there, not on the old master)."""
    def bucket() -> dict[str, str]:
        return {key: str(master.dump(key)) for key in master.keys("*hourly*")}

    before = bucket()
    await limits.acquire([check])
    return bucket() != before
