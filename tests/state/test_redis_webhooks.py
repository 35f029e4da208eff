"""What only the Redis webhook store promises: one round trip per accept, keys on one Cluster slot,
nothing left behind once the windows pass, and a quick BackendUnavailable when Redis is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from proxy.state.base import BackendUnavailable
from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import EventStatus, InboundEvent
from tests.webhook_app import until

HOOK = "twilio_status"


def inbound(key: str, body: bytes = b"MessageSid=SM1&MessageStatus=sent&To=%2B15551234567") -> InboundEvent:
    return InboundEvent(webhook=HOOK, dedupe_key=key, method="POST", query="",
                        headers=(("Content-Type", "application/x-www-form-urlencoded"),), body=body,
                        received_at=time.time(), org="AC1", event_type="sent", verified="twilio")


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisWebhookStore]:
    store = RedisWebhookStore(redis_url, timeout=2.0)
    await store.start()
    yield store
    await store.close()


async def test_accept_is_one_round_trip(store, redis_server) -> None:  # type: ignore[no-untyped-def]
    await store.accept(inbound("warm-up"), dedupe_window=60, log_retention=60)  # the pool's connection is open
    with redis_server.client() as other, redis_server.client() as watcher:
        other.ping()
        with watcher.monitor() as monitor:
            await store.accept(inbound("k1"), dedupe_window=60, log_retention=60)
            await store.accept(inbound("k1"), dedupe_window=60, log_retention=60)
            other.echo("done")
            sent = []
            while (command := monitor.next_command())["command"] != "ECHO done":
                if command["client_type"] != "lua":  # what the scripts ran inside Redis is not a round trip
                    sent.append(command["command"].split()[0])
    assert sent == ["EVALSHA", "EVALSHA"]


async def test_every_key_of_a_webhook_carries_its_hash_tag(store, redis_server) -> None:  # type: ignore[no-untyped-def]
    accepted = await store.accept(inbound("k1"), dedupe_window=60, log_retention=60)
    await store.accept(inbound("k2"), dedupe_window=60, log_retention=60, delivered=True)
    (delivery,) = await store.claim(HOOK, "c", 10, 60)
    await store.settle(delivery, EventStatus.FAILED, error="503 from the app", retry_at=time.time() + 60)
    assert await store.event(HOOK, accepted.event_id) is not None
    with redis_server.client() as client:
        keys = client.keys("*")
    assert len(keys) >= 8 and all(key.startswith("rp:{wh:twilio_status}:") for key in keys)


async def test_once_the_windows_pass_nothing_is_left_and_memory_is_back(own_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisWebhookStore(own_redis.url, timeout=2.0)
    await store.start()
    client = own_redis.client()
    try:
        await store.accept(inbound("warm-up"), dedupe_window=0.5, log_retention=0.5)  # Lua and the stream's first node

        async def empty() -> bool:
            return client.dbsize() == 0

        await until(empty)
        start = client.info("memory")["used_memory"]
        ids = [(await store.accept(inbound(f"k{i}", body=b"x" * 2000), dedupe_window=3.0, log_retention=5.0)).event_id
               for i in range(200)]
        assert (await store.accept(inbound("k199"), dedupe_window=3.0, log_retention=5.0)).duplicate
        assert client.dbsize() > 600 and client.info("memory")["used_memory"] > start + 200 * 2000
        await store.accept(inbound("sync"), dedupe_window=3.0, log_retention=5.0, delivered=True)
        deliveries = await store.claim(HOOK, "c", 150, 60)
        outcomes = [EventStatus.COMPLETED, EventStatus.DEAD_LETTER, EventStatus.FAILED]
        for n, delivery in enumerate(deliveries[:100]):  # the rest stay claimed, as a killed replica leaves them
            await store.settle(delivery, outcomes[n % 3], error="500 from the app", retry_at=time.time() + 0.5)

        await until(empty, deadline=20)
        assert await store.event(HOOK, ids[0]) is None
        assert not (await store.accept(inbound("k199"), dedupe_window=0.1, log_retention=0.1)).duplicate
        await until(empty, deadline=20)
        assert client.info("memory")["used_memory"] - start < 64 * 1024
    finally:
        client.close()
        await store.close()


async def test_a_dead_redis_answers_backend_unavailable_at_once(own_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisWebhookStore(own_redis.url, timeout=0.25, retry_interval=0.1)
    await store.start()
    try:
        own_redis.kill()
        with pytest.raises(BackendUnavailable):
            await store.accept(inbound("k1"), dedupe_window=60, log_retention=60)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.accept(inbound("k2"), dedupe_window=60, log_retention=60)
        assert time.monotonic() - started < 0.05
        own_redis.start()  # empty, without the scripts: loaded again on the way

        async def accepted() -> bool:
            try:
                return not (await store.accept(inbound("k3"), dedupe_window=60, log_retention=60)).duplicate
            except BackendUnavailable:
                return False

        await until(accepted)
        assert store.backend_up
    finally:
        await store.close()


async def test_a_hung_redis_costs_an_accept_at_most_the_timeout(own_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisWebhookStore(own_redis.url, timeout=0.2)
    await store.start()
    try:
        own_redis.pause()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await store.accept(inbound("k1"), dedupe_window=60, log_retention=60)
        assert time.monotonic() - started < 1.0
    finally:
        own_redis.resume()
        await store.close()


async def test_consumers_of_replicas_that_are_gone_are_forgotten(store, redis_url, redis_server) -> None:  # type: ignore[no-untyped-def]
    await store.accept(inbound("k1"), dedupe_window=60, log_retention=60)
    (delivery,) = await store.claim(HOOK, "gone", 10, 0.05)
    await store.settle(delivery, EventStatus.COMPLETED)
    await store.accept(inbound("k2"), dedupe_window=60, log_retention=60)
    (held,) = await store.claim(HOOK, "killed", 10, 0.05)  # dies holding an event
    await asyncio.sleep(0.1)
    restarted = RedisWebhookStore(redis_url, timeout=2.0)  # a new process looks at once
    await restarted.start()
    try:
        (taken,) = await restarted.claim(HOOK, "alive", 10, 0.05)
        assert taken.event_id == held.event_id
        with redis_server.client() as client:
            names = {c["name"] for c in client.xinfo_consumers(f"rp:{{wh:{HOOK}}}:q", "delivery")}
        assert names == {"alive"}  # "killed" is forgotten once its event was taken over
    finally:
        await restarted.close()


async def test_a_dead_consumers_events_are_found_behind_many_live_claims(store) -> None:  # type: ignore[no-untyped-def]
    for i in range(40):
        await store.accept(inbound(f"k{i}"), dedupe_window=60, log_retention=60)
    assert len(await store.claim(HOOK, "dead", 40, 60)) == 40
    await asyncio.sleep(0.3)
    live = await store.claim(HOOK, "live", 30, 0.2)  # the 30 oldest, claimed afresh: not idle
    assert len(live) == 30
    (taken,) = await store.claim(HOOK, "other", 1, 0.2)  # past 30 live claims to a dead one
    assert taken.event_id not in {d.event_id for d in live}
