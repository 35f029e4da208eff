"""The delivery workers against a real redis-server and a real loopback app (and real processes)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.config.webhooks import Backoff, Delivery, Webhook
from proxy.events import WebhookAttempted, WebhookSettled
from proxy.runtime.delivery import DeliveryWorkers
from proxy.state.base import BackendUnavailable
from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import EventStatus
from tests.webhook_app import DAY, WEEK, App, inbound, until


def webhook(app: App, attempts: int = 8, concurrency: int = 4) -> Webhook:
    return Webhook(name="twilio_status", path="/hooks/twilio/status", deliver_to=app.url, provider="twilio",
                   delivery=Delivery(attempts=attempts, backoff=Backoff(0.05, 2.0, 0.4), timeout=5.0,
                                     concurrency=concurrency))


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisWebhookStore]:
    store = RedisWebhookStore(redis_url, timeout=2.0)
    await store.start()
    yield store
    await store.close()


async def statuses(store: RedisWebhookStore, ids: list[str]) -> set[EventStatus]:
    return {record.status for i in ids if (record := await store.event("twilio_status", i))}


async def test_an_event_arrives_as_the_provider_sent_it_with_the_webhook_headers(store, app) -> None:  # type: ignore[no-untyped-def]
    events: list[object] = []
    hook = webhook(app)
    workers = DeliveryWorkers(store, lambda: (hook,), events.append, poll_interval=0.05)
    await workers.start()
    try:
        accepted = await store.accept(inbound("k1", body=b"\x00\xffbinary"), dedupe_window=DAY, log_retention=WEEK)
        await until(lambda: len(app.received) == 1)
        (seen,) = app.received
        assert (seen["method"], seen["query"], seen["body"]) == ("POST", "x=1", b"\x00\xffbinary")
        headers = seen["headers"]
        assert (headers["Content-Type"], headers["I-Twilio-Idempotency-Token"], headers["X-Webhook-Id"],
                headers["X-Webhook-Attempt"], headers["X-Webhook-Verified"]) == (
            "application/x-www-form-urlencoded", "k1", accepted.event_id, "1", "twilio")
        await until(lambda: any(isinstance(e, WebhookSettled) for e in events))
        record = await store.event("twilio_status", accepted.event_id)
        assert record is not None and (record.status, record.attempts) == (EventStatus.COMPLETED, 1)
        attempted = [e for e in events if isinstance(e, WebhookAttempted)]
        assert [(e.webhook, e.attempt, e.result, e.status) for e in attempted] == [
            ("twilio_status", 1, "completed", 200)]
    finally:
        await workers.close()


async def test_an_app_down_for_seconds_gets_every_event_afterwards(store, app) -> None:  # type: ignore[no-untyped-def]
    await app.stop()
    hook = webhook(app, attempts=20)
    workers = DeliveryWorkers(store, lambda: (hook,), lambda e: None, poll_interval=0.05)
    await workers.start()
    try:
        ids = [(await store.accept(inbound(f"k{i}"), dedupe_window=DAY, log_retention=WEEK)).event_id
               for i in range(20)]
        await asyncio.sleep(3)  # the app stays down for seconds while the events wait
        assert EventStatus.COMPLETED not in await statuses(store, ids)
        failed = await store.event("twilio_status", ids[0])
        assert failed is not None and failed.error == "app unreachable" and failed.attempts > 1
        await app.start()

        async def all_completed() -> bool:
            return await statuses(store, ids) == {EventStatus.COMPLETED}

        await until(all_completed)
        assert set(app.ids()) == set(ids)
        assert all(r["headers"]["X-Webhook-Attempt"] != "1" for r in app.received)
    finally:
        await workers.close()


async def test_an_app_answering_500_fills_dead_letter_and_replay_completes_them(store, app) -> None:  # type: ignore[no-untyped-def]
    app.status = 500
    hook = webhook(app, attempts=3)
    workers = DeliveryWorkers(store, lambda: (hook,), lambda e: None, poll_interval=0.05)
    await workers.start()
    try:
        ids = [(await store.accept(inbound(f"k{i}"), dedupe_window=DAY, log_retention=WEEK)).event_id
               for i in range(10)]

        async def all_dead() -> bool:
            return await statuses(store, ids) == {EventStatus.DEAD_LETTER}

        await until(all_dead)
        assert len(app.received) == 30
        dead = await store.events("twilio_status", EventStatus.DEAD_LETTER, 100)
        assert {(r.attempts, r.error) for r in dead} == {(3, "500 from the app (3 attempts)")}
        app.status = 200
        app.received.clear()
        assert await store.replay_all("twilio_status", EventStatus.DEAD_LETTER) == 10

        async def all_completed() -> bool:
            return await statuses(store, ids) == {EventStatus.COMPLETED}

        await until(all_completed)
        assert sorted(app.ids()) == sorted(ids)
        assert {r["headers"]["X-Webhook-Attempt"] for r in app.received} == {"1"}  # attempts counted afresh
    finally:
        await workers.close()


async def test_a_4xx_is_a_dead_letter_at_once(store, app) -> None:  # type: ignore[no-untyped-def]
    app.status = 404
    hook = webhook(app)
    workers = DeliveryWorkers(store, lambda: (hook,), lambda e: None, poll_interval=0.05)
    await workers.start()
    try:
        event_id = (await store.accept(inbound("k1"), dedupe_window=DAY, log_retention=WEEK)).event_id

        async def dead() -> bool:
            record = await store.event("twilio_status", event_id)
            return record is not None and record.status == EventStatus.DEAD_LETTER

        await until(dead)
        assert len(app.received) == 1
    finally:
        await workers.close()


async def test_a_429_is_retried_after_the_time_it_asks_for(store, app) -> None:  # type: ignore[no-untyped-def]
    app.status, app.headers = 429, {"Retry-After": "1"}
    hook = webhook(app)
    workers = DeliveryWorkers(store, lambda: (hook,), lambda e: None, poll_interval=0.05)
    await workers.start()
    try:
        await store.accept(inbound("k1"), dedupe_window=DAY, log_retention=WEEK)
        await until(lambda: len(app.received) == 1)
        first = time.monotonic()
        app.status = 200
        await until(lambda: len(app.received) == 2)
        assert time.monotonic() - first >= 0.9  # not the 50 ms backoff
    finally:
        await workers.close()


async def test_drain_finishes_what_started_and_hands_back_the_rest(store, app) -> None:  # type: ignore[no-untyped-def]
    app.hold = asyncio.Event()
    hook = webhook(app, concurrency=2)
    workers = DeliveryWorkers(store, lambda: (hook,), lambda e: None, poll_interval=0.05, visibility=3600)
    await workers.start()
    ids = [(await store.accept(inbound(f"k{i}"), dedupe_window=DAY, log_retention=WEEK)).event_id
           for i in range(5)]
    await until(lambda: len(app.received) == 2)
    await workers.drain(0.2)  # the two under way outlast the grace: handed back too
    await workers.close()
    records = [await store.event("twilio_status", i) for i in ids]
    assert {(r.status, r.attempts) for r in records if r} == {(EventStatus.PENDING, 0)}
    app.hold.set()
    other = DeliveryWorkers(store, lambda: (hook,), lambda e: None, poll_interval=0.05, visibility=3600)
    await other.start()
    try:
        async def all_completed() -> bool:
            return await statuses(store, ids) == {EventStatus.COMPLETED}

        await until(all_completed)  # at once, not after the hour-long lease
    finally:
        await other.close()


async def test_a_dead_redis_pauses_the_workers_and_they_resume(own_redis, app) -> None:  # type: ignore[no-untyped-def]
    store = RedisWebhookStore(own_redis.url, timeout=1.0, retry_interval=0.1)
    await store.start()
    hook = webhook(app)
    workers = DeliveryWorkers(store, lambda: (hook,), lambda e: None, poll_interval=0.05)
    await workers.start()
    try:
        own_redis.kill()
        await asyncio.sleep(1.0)  # the loops meet a dead Redis, again and again
        own_redis.start()

        async def accepted() -> str | None:
            try:
                return (await store.accept(inbound("k1"), dedupe_window=DAY, log_retention=WEEK)).event_id
            except BackendUnavailable:
                return None

        event_id = await until(accepted)
        await until(lambda: event_id in app.ids())
    finally:
        await workers.close()
        await store.close()


def worker_process(tmp_path: Path, name: str, redis_url: str, app: App, visibility: float) -> subprocess.Popen[bytes]:
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.webhook_worker", redis_url, app.url, str(visibility)],
                                stdout=log, stderr=subprocess.STDOUT)


async def test_a_replica_killed_while_holding_events_leaves_them_to_the_other(tmp_path, redis_url, store,  # type: ignore[no-untyped-def]
                                                                               app) -> None:
    app.hold = asyncio.Event()
    doomed = worker_process(tmp_path, "doomed", redis_url, app, visibility=1.0)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        ids = [(await store.accept(inbound(f"k{i}"), dedupe_window=DAY, log_retention=WEEK)).event_id
               for i in range(12)]
        await until(lambda: len(app.received) >= 4, 10)  # the doomed replica holds 4 (its concurrency)
        held = set(app.ids())
        assert len(held) == 4, held
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        app.hold.set()
        survivor = worker_process(tmp_path, "survivor", redis_url, app, visibility=1.0)

        async def all_completed() -> bool:
            return await statuses(store, ids) == {EventStatus.COMPLETED}

        await until(all_completed)
        assert set(app.ids()) == set(ids)  # none lost
        for event_id in held:  # taken over after the lease, on a second attempt
            record = await store.event("twilio_status", event_id)
            assert record is not None and record.attempts == 2
    finally:
        for process in (doomed, survivor):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
