"""One behavioural suite for every webhook store backend: memory, and Redis (a real redis-server).

Rule times (retry due times, the log's expiry index) follow the FakeClock passed to the store;
Redis's TTLs and XAUTOCLAIM's idle time follow Redis's own clock, so tests about expiry and
visibility advance the fake clock and then poll, with a deadline, until the backend agrees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.clock import FakeClock
from proxy.state.memory_webhooks import MemoryWebhookStore
from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import Accepted, DeliveryQueue, EventStatus, InboundEvent, KeptAnswer
from tests.webhook_app import until

HOOK = "twilio_status"
DAY = 86_400.0
WEEK = 7 * DAY

StoreFactory = Callable[[FakeClock, pytest.FixtureRequest], Awaitable[DeliveryQueue]]


async def memory_store(clock: FakeClock, request: pytest.FixtureRequest) -> DeliveryQueue:
    return MemoryWebhookStore(clock=clock)


async def redis_store(clock: FakeClock, request: pytest.FixtureRequest) -> DeliveryQueue:
    return RedisWebhookStore(request.getfixturevalue("redis_url"), clock=clock, timeout=2.0)


async def cluster_store(clock: FakeClock, request: pytest.FixtureRequest) -> DeliveryQueue:
    # The same store on a 3-master Redis Cluster (redis+cluster://): every script on one slot.
    return RedisWebhookStore(request.getfixturevalue("cluster_url"), clock=clock, timeout=2.0)


BACKENDS: dict[str, StoreFactory] = {"memory": memory_store, "redis": redis_store, "cluster": cluster_store}


@pytest.fixture(params=sorted(BACKENDS))
async def store_and_clock(request: pytest.FixtureRequest) -> AsyncIterator[tuple[DeliveryQueue, FakeClock]]:
    clock = FakeClock()
    store = await BACKENDS[request.param](clock, request)
    await store.start()
    yield store, clock
    if isinstance(store, RedisWebhookStore):  # every call answered
        assert (store.backend_up, store.backend_failures) == (True, 0)
    await store.close()


def inbound(clock: FakeClock, key: str = "k1", body: bytes = b"MessageSid=SM1&MessageStatus=delivered",
            **fields: Any) -> InboundEvent:
    values: dict[str, Any] = {
        "webhook": HOOK, "dedupe_key": key, "method": "POST", "query": "a=1&b=2", "body": body,
        "headers": (("Content-Type", "application/x-www-form-urlencoded"), ("X-Extra", "yes")),
        "received_at": clock.now(), "org": "AC123", "event_type": "delivered", "verified": "twilio"}
    values.update(fields)
    return InboundEvent(**values)


async def accept(store: DeliveryQueue, clock: FakeClock, key: str = "k1", *, window: float = DAY,
                 retention: float = WEEK, **fields: Any) -> str:
    accepted = await store.accept(inbound(clock, key, **fields), dedupe_window=window, log_retention=retention)
    assert not accepted.duplicate
    return accepted.event_id


async def test_accept_logs_a_pending_event_and_a_duplicate_gets_the_same_id(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    first = await store.accept(inbound(clock), dedupe_window=DAY, log_retention=WEEK)
    again = await store.accept(inbound(clock, body=b"other"), dedupe_window=DAY, log_retention=WEEK)
    assert (first.duplicate, again.duplicate, again.event_id) == (False, True, first.event_id)
    record = await store.event(HOOK, first.event_id)
    assert record is not None
    assert (record.status, record.attempts, record.received_at, record.org, record.event_type, record.error,
            record.last_attempt_at, record.completed_at) == (EventStatus.PENDING, 0, clock.now(), "AC123",
                                                              "delivered", "", None, None)
    assert len(await store.claim(HOOK, "a", 10, 60)) == 1  # the duplicate was not queued


async def test_a_claim_carries_the_payload_unchanged_and_counts_the_attempt(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    body = bytes(range(256)) * 3  # not UTF-8: bodies travel as bytes
    event_id = await accept(store, clock, body=body)
    clock.advance(2)
    (delivery,) = await store.claim(HOOK, "a", 10, 60)
    assert (delivery.event_id, delivery.attempt, delivery.method, delivery.query, delivery.body, delivery.verified,
            delivery.received_at) == (event_id, 1, "POST", "a=1&b=2", body, "twilio", clock.now() - 2)
    assert delivery.headers == (("Content-Type", "application/x-www-form-urlencoded"), ("X-Extra", "yes"))
    record = await store.event(HOOK, event_id)
    assert record is not None and (record.status, record.attempts, record.last_attempt_at) == (
        EventStatus.PROCESSING, 1, clock.now())
    assert await store.claim(HOOK, "b", 10, 60) == []


async def test_completed_is_logged_with_its_time_and_never_claimed_again(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    event_id = await accept(store, clock)
    (delivery,) = await store.claim(HOOK, "a", 10, 60)
    clock.advance(1)
    assert await store.settle(delivery, EventStatus.COMPLETED)
    record = await store.event(HOOK, event_id)
    assert record is not None and (record.status, record.completed_at, record.attempts) == (
        EventStatus.COMPLETED, clock.now(), 1)
    clock.advance(3600)
    assert await store.claim(HOOK, "a", 10, 0.001) == []


async def test_a_failed_attempt_waits_for_its_retry_time(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    event_id = await accept(store, clock)
    (delivery,) = await store.claim(HOOK, "a", 10, 60)
    assert await store.settle(delivery, EventStatus.FAILED, error="503 from the app", retry_at=clock.now() + 5)
    record = await store.event(HOOK, event_id)
    assert record is not None and (record.status, record.error) == (EventStatus.FAILED, "503 from the app")
    clock.advance(4.9)
    assert await store.claim(HOOK, "a", 10, 60) == []
    clock.advance(0.2)
    (again,) = await store.claim(HOOK, "b", 10, 60)
    assert (again.event_id, again.attempt) == (event_id, 2)


async def test_delivered_in_sync_mode_is_completed_and_deduplicated_but_not_queued(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    done = await store.accept(inbound(clock), dedupe_window=DAY, log_retention=WEEK, delivered=True)
    record = await store.event(HOOK, done.event_id)
    assert record is not None and (record.status, record.attempts, record.completed_at) == (
        EventStatus.COMPLETED, 1, clock.now())
    assert await store.claim(HOOK, "a", 10, 60) == []
    again = await store.accept(inbound(clock), dedupe_window=DAY, log_retention=WEEK)
    assert (again.duplicate, again.event_id) == (True, done.event_id)


TWIML = KeptAnswer(200, "text/xml", b'<?xml version="1.0"?><Response><Message>hi \xc3\xa9</Message></Response>')


async def test_a_duplicate_of_a_sync_event_gets_the_apps_kept_answer_while_the_window_lasts(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    done = await store.accept(inbound(clock, event_id="sync-1"), dedupe_window=0.3, log_retention=WEEK,
                              delivered=True, answer=TWIML)
    assert done == Accepted("sync-1", False)
    assert await store.hold(inbound(clock, event_id="sync-1"), seconds=15) == Accepted("sync-1", True, TWIML)
    assert await store.accept(inbound(clock), dedupe_window=DAY, log_retention=WEEK) == Accepted("sync-1", True, TWIML)
    assert await store.claim(HOOK, "a", 10, 60) == []  # neither duplicate was queued
    clock.advance(0.4)

    async def fresh() -> Accepted | None:
        accepted = await store.hold(inbound(clock, event_id="sync-2"), seconds=15)
        return None if accepted.duplicate else accepted

    assert await until(fresh) == Accepted("sync-2", False)  # the answer went with its dedupe key


async def test_a_delivered_event_without_a_kept_answer_has_duplicates_without_one(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    await store.accept(inbound(clock, event_id="sync-1"), dedupe_window=DAY, log_retention=WEEK, delivered=True)
    assert await store.hold(inbound(clock, event_id="sync-1"), seconds=15) == Accepted("sync-1", True)
    queued = await store.accept(inbound(clock, "k2"), dedupe_window=DAY, log_retention=WEEK, answer=TWIML)
    again = await store.accept(inbound(clock, "k2"), dedupe_window=DAY, log_retention=WEEK)
    assert again == Accepted(queued.event_id, True)  # only a delivered event keeps an answer


async def test_a_hold_makes_duplicates_until_its_accept_takes_it_over(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    assert await store.hold(inbound(clock, event_id="sync-1"), seconds=15) == Accepted("sync-1", False)
    # a duplicate while the original is forwarded: same id (derived from the dedupe key), no answer yet
    assert await store.hold(inbound(clock, event_id="sync-1"), seconds=15) == Accepted("sync-1", True)
    assert await store.accept(inbound(clock, event_id="other"), dedupe_window=DAY,
                              log_retention=WEEK) == Accepted("sync-1", True)
    assert await store.event(HOOK, "sync-1") is None  # a hold logs nothing
    # the app failed: the holder queues its event
    assert await store.accept(inbound(clock, event_id="sync-1"), dedupe_window=DAY,
                              log_retention=WEEK) == Accepted("sync-1", False)
    (delivery,) = await store.claim(HOOK, "a", 10, 60)
    assert (delivery.event_id, delivery.body) == ("sync-1", inbound(clock).body)
    assert await store.hold(inbound(clock, event_id="sync-1"), seconds=15) == Accepted("sync-1", True)


async def test_a_hold_never_taken_over_lapses(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    await store.accept(inbound(clock, "older"), dedupe_window=DAY, log_retention=WEEK)  # a longer-lived key first
    assert not (await store.hold(inbound(clock, event_id="sync-1"), seconds=0.1)).duplicate
    clock.advance(0.2)

    async def lapsed() -> bool:
        return not (await store.hold(inbound(clock, event_id="sync-2"), seconds=15)).duplicate

    await until(lapsed)  # the process that held it died mid-forward: the provider's retry is forwarded
    assert await store.accept(inbound(clock, event_id="sync-2"), dedupe_window=DAY, log_retention=WEEK,
                              delivered=True, answer=TWIML) == Accepted("sync-2", False)


async def test_an_unsettled_claim_is_taken_over_after_the_visibility_timeout(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    event_id = await accept(store, clock)
    (held,) = await store.claim(HOOK, "dead", 10, 60)
    assert await store.claim(HOOK, "alive", 10, 3600) == []
    clock.advance(1)
    (taken,) = await until(lambda: store.claim(HOOK, "alive", 10, 0.05))
    assert (taken.event_id, taken.attempt) == (event_id, 2)
    assert not await store.settle(held, EventStatus.COMPLETED)  # the dead consumer's claim is lost
    assert await store.settle(taken, EventStatus.COMPLETED)
    record = await store.event(HOOK, event_id)
    assert record is not None and record.status == EventStatus.COMPLETED


async def test_released_events_go_back_at_once_with_the_attempt_not_counted(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    ids = {await accept(store, clock, f"k{i}") for i in range(3)}
    claimed = await store.claim(HOOK, "draining", 10, 3600)
    assert {d.event_id for d in claimed} == ids
    await store.release(claimed)
    assert {(r.status, r.attempts) for r in await store.events(HOOK, None, 10)} == {(EventStatus.PENDING, 0)}
    again = await store.claim(HOOK, "other", 10, 3600)
    assert ({d.event_id for d in again}, {d.attempt for d in again}) == (ids, {1})


async def test_replay_starts_a_dead_letter_afresh(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    event_id = await accept(store, clock)
    for attempt in (1, 2):
        (delivery,) = await store.claim(HOOK, "a", 10, 60)
        assert delivery.attempt == attempt
        status = EventStatus.FAILED if attempt == 1 else EventStatus.DEAD_LETTER
        await store.settle(delivery, status, error="500 from the app", retry_at=clock.now())
    assert not await store.replay(HOOK, "no-such-event")
    assert await store.replay(HOOK, event_id)
    assert not await store.replay(HOOK, event_id)  # already waiting
    record = await store.event(HOOK, event_id)
    assert record is not None and (record.status, record.attempts, record.error, record.completed_at) == (
        EventStatus.PENDING, 0, "", None)
    (delivery,) = await store.claim(HOOK, "a", 10, 60)
    assert delivery.attempt == 1


async def test_replay_all_replays_every_event_of_a_status(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    for i in range(5):
        await accept(store, clock, f"k{i}")
    claimed = await store.claim(HOOK, "a", 10, 60)
    for delivery in claimed[:3]:
        await store.settle(delivery, EventStatus.DEAD_LETTER, error="404 from the app")
    await store.settle(claimed[3], EventStatus.COMPLETED)
    assert await store.replay_all(HOOK, EventStatus.DEAD_LETTER) == 3
    assert await store.replay_all(HOOK, EventStatus.DEAD_LETTER) == 0
    stats = await store.stats(HOOK)
    assert (stats.counts[EventStatus.PENDING], stats.counts[EventStatus.PROCESSING],
            stats.counts[EventStatus.COMPLETED], stats.counts[EventStatus.DEAD_LETTER]) == (3, 1, 1, 0)


async def test_stats_count_by_status_with_depth_and_oldest_unfinished_age(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    empty = await store.stats(HOOK)
    assert (empty.webhook, empty.depth, empty.oldest_pending_age, sum(empty.counts.values())) == (HOOK, 0, None, 0)
    first = await accept(store, clock, "k1")
    clock.advance(10)
    await accept(store, clock, "k2")
    clock.advance(10)
    await accept(store, clock, "k3")
    deliveries = {d.event_id: d for d in await store.claim(HOOK, "a", 2, 60)}
    assert first in deliveries
    await store.settle(deliveries.pop(first), EventStatus.COMPLETED)
    (other,) = deliveries.values()
    await store.settle(other, EventStatus.FAILED, error="timeout", retry_at=clock.now() + 60)
    clock.advance(5)
    stats = await store.stats(HOOK)
    assert dict(stats.counts) == {EventStatus.PENDING: 1, EventStatus.PROCESSING: 0, EventStatus.COMPLETED: 1,
                                  EventStatus.FAILED: 1, EventStatus.DEAD_LETTER: 0}
    assert (stats.depth, stats.oldest_pending_age) == (2, 15.0)


async def test_events_are_listed_newest_first_filtered_and_limited(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    ids = []
    for i in range(4):
        ids.append(await accept(store, clock, f"k{i}", event_type=f"t{i}"))
        clock.advance(1)
    assert [r.id for r in await store.events(HOOK, None, 10)] == ids[::-1]
    assert [r.id for r in await store.events(HOOK, None, 2)] == ids[:1:-1]
    assert await store.events(HOOK, EventStatus.DEAD_LETTER, 10) == []
    assert [r.event_type for r in await store.events(HOOK, EventStatus.PENDING, 10)] == ["t3", "t2", "t1", "t0"]
    assert await store.events("other_hook", None, 10) == []


async def test_dedupe_keys_and_log_entries_expire_with_their_windows(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    done = await store.accept(inbound(clock), dedupe_window=0.2, log_retention=0.6, delivered=True)
    clock.advance(0.3)

    async def new_id() -> str | None:
        accepted = await store.accept(inbound(clock), dedupe_window=60, log_retention=60)
        return None if accepted.duplicate else accepted.event_id

    fresh = await until(new_id)
    assert fresh != done.event_id
    clock.advance(0.4)

    async def expired() -> bool:
        return await store.event(HOOK, done.event_id) is None

    await until(expired)
    assert [r.id for r in await store.events(HOOK, None, 10)] == [fresh]
    assert (await store.stats(HOOK)).counts[EventStatus.COMPLETED] == 0


async def test_an_event_whose_payload_expired_is_dead_lettered_not_delivered(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    event_id = await accept(store, clock, window=0.1, retention=60)
    clock.advance(0.2)
    await asyncio.sleep(0.15)

    async def dead() -> bool:
        assert await store.claim(HOOK, "a", 10, 60) == []
        record = await store.event(HOOK, event_id)
        return record is not None and record.status == EventStatus.DEAD_LETTER

    await until(dead)
    record = await store.event(HOOK, event_id)
    assert record is not None and record.error == "payload expired before delivery"
    assert not await store.replay(HOOK, event_id)


async def test_an_event_keeps_the_id_the_listener_gave_it(store_and_clock) -> None:  # type: ignore[no-untyped-def]
    store, clock = store_and_clock
    given = await store.accept(inbound(clock, event_id="sync-given-id"), dedupe_window=DAY, log_retention=WEEK)
    assert given == Accepted("sync-given-id", False)
    again = await store.accept(inbound(clock, event_id="another-id"), dedupe_window=DAY, log_retention=WEEK)
    assert again == Accepted("sync-given-id", True)
    (delivery,) = await store.claim(HOOK, "a", 10, 60)
    assert delivery.event_id == "sync-given-id"
