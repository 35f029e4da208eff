"""Redis Cluster (``redis+cluster://``): the stores on a real 3-master, 3-replica cluster on loopback.

The session's cluster (tests/conftest.py, emptied per test) serves the tests that kill nothing; a test
that kills a node starts a cluster of its own (about 2 s). The contract suites also run on the cluster
(test_*_store_contract.py, backend "cluster"). Waits poll with a deadline; nothing sleeps a fixed time
to let something happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from proxy.clock import FakeClock
from proxy.config.policy_values import BreakerPolicy, KeyKind, LimitPolicy, Rate
from proxy.policy.breaker import Action, State
from proxy.policy.ratelimit import Check
from proxy.state.base import BackendUnavailable
from proxy.state.redis.breaker_scripts import hash_key
from proxy.state.redis.breakers import RedisBreakerStore
from proxy.state.redis.client import CONFIRM_FACTOR
from proxy.state.redis.limit_shards import shard_key
from proxy.state.redis.limits import RedisLimitStore
from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import EventStatus
from tests.cluster_servers import ClusterSet
from tests.state.redis.test_breakers import KEY, POLICY, eventually, open_at_both, open_breaker
from tests.state.redis.test_limits import calls_since, command_calls
from tests.state.test_redis_webhooks import HOOK, inbound

PROBES = BreakerPolicy(consecutive_failures=3, open_for=30, jitter=0.0, half_open_probes=2)
Store = RedisBreakerStore | RedisLimitStore | RedisWebhookStore
MakeStore = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_store(cluster_url: str) -> AsyncIterator[MakeStore]:
    """Start a store of ``kind`` on the test's cluster (or ``url``); all are closed after the test."""
    started: list[Store] = []

    async def make(kind: type[Store] = RedisBreakerStore, url: str = cluster_url, **options: Any) -> Any:
        if kind is RedisBreakerStore:
            options.setdefault("random", lambda: 0.5)
        store = kind(url, **options)
        await store.start()
        started.append(store)
        # A start-up connect past the timeout (a stalled machine) leaves a store local for one retry_interval.
        await eventually(lambda: store.backend_up, deadline=5.0)
        return store

    yield make
    for store in started:
        await store.close()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterSet]:
    """A cluster of this test alone, which it may kill nodes of."""
    cluster = ClusterSet(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def limit(name: str, per_minute: int, *, key: str = "-", group: str = "twilio/sms", burst: int | None = None,
          shadow: bool = False) -> Check:
    rate = Rate(per_minute, 60.0, per_minute - 1 if burst is None else burst)
    return Check(LimitPolicy(name, KeyKind.GLOBAL, rate, shadow=shadow), group, f"{name}:{key}", rate)


def masters_calls(cluster: ClusterSet) -> dict[int, dict[str, int]]:
    calls = {}
    for node in cluster.master_nodes():
        with node.client() as client:
            calls[node.port] = command_calls(client)
    return calls


def all_keys(cluster: ClusterSet) -> dict[str, int]:
    """Every key of the cluster, and the port of the master that holds it."""
    found = {}
    for node in cluster.master_nodes():
        with node.client() as client:
            found.update({key: node.port for key in client.keys("*")})
    return found


def tag(key: str) -> str:
    return key[key.index("{") + 1:key.index("}")]


# -- every store, and where its keys go ---------------------------------------------------------------

async def test_every_store_works_on_a_cluster_url_with_each_script_on_its_keys_slot(
        make_store: MakeStore, redis_cluster: ClusterSet, caplog: pytest.LogCaptureFixture) -> None:
    a, b = await make_store(), await make_store()
    limits = await make_store(RedisLimitStore, timeout=2.0)
    webhooks = await make_store(RedisWebhookStore, timeout=2.0)
    breakers = [f"api-{n}/default" for n in range(6)]
    for key in breakers:
        await open_breaker(a, key)
    await eventually(lambda: all(b.view(key).state == State.OPEN for key in breakers))
    org, hourly = limit("per_org", 100, key="acme"), limit("hourly", 1000)
    assert (await limits.acquire([org, hourly]))[0].remaining == 99
    await limits.hold([org, hourly], 1.0)
    accepted = await webhooks.accept(inbound("k1"), dedupe_window=60, log_retention=60)
    (delivery,) = await webhooks.claim(HOOK, "c", 10, 60)
    assert await webhooks.settle(delivery, EventStatus.FAILED, error="503", retry_at=time.time() + 60)
    assert (await webhooks.event(HOOK, accepted.event_id)).status == EventStatus.FAILED  # type: ignore[union-attr]
    assert (await webhooks.stats(HOOK)).counts[EventStatus.FAILED] == 1

    keys = all_keys(redis_cluster)
    tags = {tag(key) for key in keys}
    # One hash tag per breaker, per limit key and per webhook: every script's keys on one slot (a
    # script touching another slot fails in a cluster, and the stores above would have said so).
    assert tags == {*breakers, "rl:twilio/sms:per_org:acme", "rl:twilio/sms:hourly:-", f"wh:{HOOK}"}
    assert all(key.startswith(f"rp:{{wh:{HOOK}}}:") for key in keys if tag(key) == f"wh:{HOOK}")
    assert len(set(keys.values())) == 3, "the keys spread over the three masters"
    assert all(store.backend_up and store.backend_failures == 0 for store in (a, b, limits, webhooks))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


# -- breakers: one fleet, exact probes ----------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cold", "warm"])
async def test_a_burst_when_open_time_ends_admits_exactly_the_probes_across_replicas(make_store: MakeStore,
                                                                                    pool: str) -> None:
    """300 callers per replica when an open breaker's time ends, on the cluster: exactly the probes. (A 1 s
    wait per admission: a call that times out may hold a slot unseen, which test_breakers.py covers; this
    test is about the script on the breaker's slot, on a machine busy with six cluster nodes.)"""
    clock = FakeClock()
    a, b = await open_at_both(partial(make_store, timeout=0.25), clock, PROBES)
    if pool == "warm":
        await asyncio.gather(*[store.views([KEY]) for store in (a, b) for _ in range(32)])
    clock.advance(30)
    admissions = await asyncio.gather(*[(a if i % 2 else b).admit(KEY, PROBES) for i in range(600)])
    assert sum(admission.allowed for admission in admissions) == 2
    assert sum(admission.transition is not None for admission in admissions) == 1
    assert a.backend_up and b.backend_up


async def test_a_late_event_loop_never_lets_a_replica_admit_probes_of_its_own(make_store: MakeStore) -> None:
    """The confirming PING goes to the master of the breaker's slot, which answers: no local probes."""
    clock = FakeClock()
    a, b = await open_at_both(make_store, clock, PROBES)
    clock.advance(30)

    async def stall() -> None:
        await asyncio.sleep(0)
        time.sleep(0.05 * CONFIRM_FACTOR * 1.5)  # noqa: ASYNC251 (the whole event loop is late)

    *admissions, _ = await asyncio.gather(*[(a if i % 2 else b).admit(KEY, PROBES) for i in range(40)], stall())
    assert sum(admission.allowed for admission in admissions) <= 2
    assert a.backend_up and b.backend_up


async def test_an_operator_action_through_one_replica_shows_at_the_other(make_store: MakeStore) -> None:
    a, b = await make_store(), await make_store()
    await a.force(KEY, POLICY, Action.FORCE_OPEN, "oncall")
    await eventually(lambda: b.view(KEY).state == State.FORCED_OPEN)
    assert b.view(KEY).forced_by == "oncall"


# -- rate limits: one slot per limit key ---------------------------------------------------------------

async def test_a_shared_limit_never_over_admits_across_two_stores(make_store: MakeStore) -> None:
    clock = FakeClock()  # time stands still: what passes is decided by the buckets alone
    a = await make_store(RedisLimitStore, clock=clock, timeout=2.0)
    b = await make_store(RedisLimitStore, clock=clock, timeout=2.0)
    org, hourly = limit("per_org", 50, key="acme", burst=49), limit("hourly", 10_000)  # org: 50 at once
    verdicts = await asyncio.gather(*[(a if i % 2 else b).acquire([org, hourly]) for i in range(200)])
    assert sum(request[0].allowed for request in verdicts) == 50
    # Only the 50 admitted requests were charged to the other limit: the 150 denied ones were refunded.
    (after,) = await a.acquire([hourly])
    assert after.remaining == 10_000 - 50 - 1


async def test_a_request_denied_on_one_slot_gives_the_same_verdicts_as_one_redis(make_store: MakeStore,
                                                                               redis_url: str) -> None:
    """Two limits on two slots (two masters): the tight one denies, the loose one is refunded each time,
    and every verdict equals one Redis's, where one script decides both."""
    tight, loose, shadow = limit("tight", 3, burst=1), limit("loose", 100, key="acme"), limit(
        "shadowed", 2, burst=0, shadow=True)
    keys = [shard_key("rp:", check) for check in (tight, loose, shadow)]
    assert len({key_slot(key.encode()) for key in keys}) == 3
    clock = FakeClock()
    cluster = await make_store(RedisLimitStore, clock=clock, timeout=2.0)
    single = await make_store(RedisLimitStore, url=redis_url, clock=clock, timeout=2.0)
    for _ in range(3):
        for _ in range(6):
            requests = [[tight, loose, shadow], [loose], [tight]]
            for checks in requests:
                assert await cluster.acquire(checks) == await single.acquire(checks)
        clock.advance(7.5)


async def test_an_acquire_is_one_script_per_limit_key_spread_over_the_masters(make_store: MakeStore,
                                                                               redis_cluster: ClusterSet) -> None:
    store = await make_store(RedisLimitStore, clock=FakeClock(), timeout=2.0)
    checks = [limit(name, 100) for name in ("a", "b", "c")]
    homes = {redis_cluster.master_for_key(shard_key("rp:", check)).port for check in checks}
    before = masters_calls(redis_cluster)
    for _ in range(5):
        assert all(verdict.allowed for verdict in await store.acquire(checks))
    after = masters_calls(redis_cluster)
    evalsha = {port: calls_since(before[port], after[port]).get("evalsha", 0) for port in after}
    assert sum(evalsha.values()) == 15, "one EVALSHA per limit key and request, no refund when all pass"
    assert {port for port, calls in evalsha.items() if calls} == homes


async def test_one_lane_connection_per_master_carries_every_evalsha(make_store: MakeStore,
                                                                    redis_cluster: ClusterSet) -> None:
    store = await make_store(RedisLimitStore, timeout=2.0)
    checks = [[limit("per_org", 1000, key=f"org-{n}")] for n in range(30)]
    await asyncio.gather(*[store.acquire(request) for request in checks * 10])
    for node in redis_cluster.master_nodes():
        with node.client() as client:
            lanes = [c for c in client.client_list() if c["cmd"] == "evalsha"]
        assert len(lanes) == 1, f"master {node.port}: {len(lanes)} connections sent EVALSHA"


# -- scripts: each master keeps its own ----------------------------------------------------------------

async def test_scripts_a_master_lost_are_loaded_again_on_that_master(make_store: MakeStore,
                                                                    redis_cluster: ClusterSet) -> None:
    breakers = await make_store()
    limits = await make_store(RedisLimitStore, timeout=2.0)
    webhooks = await make_store(RedisWebhookStore, timeout=2.0)
    check = limit("per_org", 100, key="acme")
    for node in redis_cluster.master_nodes():
        with node.client() as client:
            client.script_flush()
    await open_breaker(breakers)  # the record batch meets NOSCRIPT on the breaker's master
    assert (await limits.acquire([check, limit("hourly", 100)]))[0].allowed
    await webhooks.accept(inbound("k1"), dedupe_window=60, log_retention=60)
    assert all(store.backend_up and store.backend_failures == 0 for store in (breakers, limits, webhooks))


# -- the breakers' notifications ------------------------------------------------------------------------

async def test_breaker_changes_reach_a_replica_whose_subscription_node_was_killed(own_cluster: ClusterSet) -> None:
    """Only pub/sub can bring the second breaker (refresh every 60 s, and b never read it): b subscribed
    again on another node."""
    url = own_cluster.url()
    a = RedisBreakerStore(url, random=lambda: 0.5, retry_interval=0.2, refresh_interval=60)
    b = RedisBreakerStore(url, random=lambda: 0.5, retry_interval=0.2, refresh_interval=60)
    try:
        for store in (a, b):
            await store.start()
        await open_breaker(a, "first/default")
        await eventually(lambda: b.view("first/default").state == State.OPEN)
        assert b._subscription is not None and b._subscription.node is not None
        subscribed = next(node for node in own_cluster.nodes if f"127.0.0.1:{node.port}" == b._subscription.node)
        if subscribed in own_cluster.master_nodes():
            own_cluster.kill_and_wait_for_promotion(subscribed)
        else:
            subscribed.kill()
        await eventually(lambda: b._subscription is not None and b._subscription.node not in (
            None, f"127.0.0.1:{subscribed.port}"), deadline=10.0)

        async def opened_through_a(key: str) -> bool:
            """Opened on Redis: a's first call may still go to the killed master (then a opens it locally)."""
            if not a.backend_up:
                return False
            await open_breaker(a, key)
            return a.backend_up

        attempt, end = 0, time.monotonic() + 10.0
        while not await opened_through_a(second := f"second-{attempt}/default"):
            assert time.monotonic() < end, "a never shared its breakers again"
            attempt += 1
            await asyncio.sleep(0.05)
        await eventually(lambda: b.view(second).state == State.OPEN, deadline=2.0)
    finally:
        for store in (a, b):
            await store.close()


# -- a master killed mid-traffic ----------------------------------------------------------------------

async def test_a_master_failover_mid_traffic_falls_back_locally_and_shares_again(own_cluster: ClusterSet) -> None:
    """The master serving a breaker and a rate limit is SIGKILLed while two replicas call; its replica
    (whose scripts were flushed: it must load them) is promoted. No call raises but the limiter's
    documented BackendUnavailable; afterwards both stores share breakers and limits again."""
    url = own_cluster.url()
    options = {"retry_interval": 0.2}
    a = RedisBreakerStore(url, random=lambda: 0.5, **options)
    b = RedisBreakerStore(url, random=lambda: 0.5, **options)
    # 2 s: the exact count at the end must not meet a stall of a busy machine (500 ms did, once in 20 runs);
    # the killed master fails its calls at once (reset, refused), whatever the timeout
    limits_a, limits_b = RedisLimitStore(url, timeout=2.0, **options), RedisLimitStore(url, timeout=2.0, **options)
    stores: list[Store] = [a, b, limits_a, limits_b]
    key = "api/default"
    doomed = own_cluster.master_for_key(hash_key("rp:", key))
    shared = next(check for n in range(100) if own_cluster.master_for_key(
        shard_key("rp:", check := limit("per_org", 10_000, key=f"org-{n}"))) is doomed)
    with own_cluster.replica_of(doomed).client() as replica:
        replica.script_flush()
    try:
        for store in stores:
            await store.start()
        calls = fell_back = 0

        async def traffic() -> None:
            nonlocal calls, fell_back
            for store in (a, b):
                admission = await store.admit(key, POLICY)
                assert admission.allowed
                store.record(key, POLICY, False, admission.probe)
            for store in (limits_a, limits_b):
                try:
                    assert (await store.acquire([shared]))[0].allowed
                except BackendUnavailable:
                    fell_back += 1  # the limiter applies on_backend_error
            calls += 1

        for _ in range(20):
            await traffic()
        killer = asyncio.get_running_loop().run_in_executor(None, own_cluster.kill_and_wait_for_promotion, doomed)
        while not killer.done():
            await traffic()
            await asyncio.sleep(0.01)
        await killer
        assert fell_back > 0, "the traffic met the failover"

        async def shared_again() -> bool:
            await traffic()
            return all(store.backend_up for store in stores)

        end = time.monotonic() + 10.0
        while not await shared_again():
            assert time.monotonic() < end, "the stores did not share state again after the failover"
            await asyncio.sleep(0.05)
        await a.force(key, POLICY, Action.FORCE_OPEN, "oncall")
        await eventually(lambda: b.view(key).state == State.FORCED_OPEN, deadline=2.0)
        fresh = limit("after", 10, key="failover", burst=9)
        verdicts = await asyncio.gather(*[(limits_a if i % 2 else limits_b).acquire([fresh]) for i in range(30)])
        assert sum(request[0].allowed for request in verdicts) == 10
    finally:
        for store in stores:
            await store.close()


async def test_a_manual_failover_is_followed_through_moved_without_falling_back(own_cluster: ClusterSet) -> None:
    """CLUSTER FAILOVER: the old master, now a replica, answers MOVED. The lane's EVALSHA, the breakers'
    pipeline and the webhook script follow it to the new master, which lacks the scripts (flushed before)
    and answers NOSCRIPT: they are loaded there and run again. No store takes any of it for an outage."""
    url = own_cluster.url()
    breakers = RedisBreakerStore(url, random=lambda: 0.5)
    limits = RedisLimitStore(url, clock=FakeClock(), timeout=2.0)  # no refill while the failover takes
    webhooks = RedisWebhookStore(url, timeout=2.0)
    stores: list[Store] = [breakers, limits, webhooks]
    check = limit("per_org", 100, key="acme")
    old = own_cluster.master_for_key(shard_key("rp:", check))
    key = next(k for n in range(200) if own_cluster.master_for_key(hash_key("rp:", k := f"api-{n}/default")) is old)
    hook = next(h for n in range(200) if own_cluster.master_for_key(f"rp:{{wh:{(h := f'hook-{n}')}}}:q") is old)
    try:
        for store in stores:
            await store.start()
        assert (await limits.acquire([check]))[0].remaining == 99
        with own_cluster.replica_of(old).client() as replica:
            replica.script_flush()
        new = own_cluster.manual_failover(old)
        assert own_cluster.master_for_key(shard_key("rp:", check)) is new
        assert (await limits.acquire([check]))[0].remaining == 98, "the bucket is on the new master"
        await open_breaker(breakers, key)
        await webhooks.accept(replace(inbound("k1"), webhook=hook), dedupe_window=60, log_retention=60)
        assert all(store.backend_up and store.backend_failures == 0 for store in stores)
    finally:
        for store in stores:
            await store.close()


# -- a password ---------------------------------------------------------------------------------

async def test_a_password_reaches_every_connection_to_every_node(tmp_path: Path) -> None:
    """The pool's, the lanes', and the subscription's (on whichever node it picked)."""
    cluster = ClusterSet(tmp_path / "cluster", password="s3cret")
    try:
        cluster.start()
        url = cluster.url(password="s3cret")
        a, b = RedisBreakerStore(url, random=lambda: 0.5), RedisBreakerStore(url, random=lambda: 0.5)
        limits = RedisLimitStore(url, timeout=2.0)
        try:
            for store in (a, b, limits):
                await store.start()
            await open_breaker(a)
            await eventually(lambda: b.view(KEY).state == State.OPEN)
            checks = [limit(name, 100) for name in ("a", "b", "c")]
            assert all(verdict.allowed for verdict in await limits.acquire(checks))
            assert all(store.backend_up and store.backend_failures == 0 for store in (a, b, limits))
        finally:
            for store in (a, b, limits):
                await store.close()
    finally:
        cluster.stop()
