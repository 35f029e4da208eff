"""The sidecar runs the delivery workers for its configured webhooks, and hands their events back on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import yaml

from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import EventStatus
from tests.processes import SidecarProcess
from tests.webhook_app import DAY, WEEK, App, inbound, until

UPSTREAMS = {"api": {"url": "http://127.0.0.1:9", "prefix": "/api"}}


def webhooks_policy(directory: Path, app: App, concurrency: int = 4) -> None:
    (directory / "policies").mkdir(exist_ok=True)
    hooks = {"webhooks": {"twilio_status": {
        "path": "/hooks/twilio/status", "deliver_to": app.url, "provider": "none",
        "delivery": {"attempts": 5, "backoff": {"initial": "50ms", "multiplier": 2, "max": "500ms"},
                     "timeout": "5s", "concurrency": concurrency}}}}
    (directory / "policies" / "hooks.yaml").write_text(yaml.safe_dump(hooks))


async def test_the_sidecar_delivers_what_its_store_accepts(tmp_path, start_sidecar, redis_url, app) -> None:  # type: ignore[no-untyped-def]
    webhooks_policy(tmp_path, app)
    sidecar = await start_sidecar(UPSTREAMS, state={"backend": "redis", "redis_url": redis_url})
    assert sidecar.webhooks is not None
    accepted = await sidecar.webhooks.accept(inbound("k1"), dedupe_window=DAY, log_retention=WEEK)
    await until(lambda: accepted.event_id in app.ids())


async def test_memory_backend_says_events_are_lost_on_restart(tmp_path, start_sidecar, app, caplog) -> None:  # type: ignore[no-untyped-def]
    webhooks_policy(tmp_path, app)
    with caplog.at_level(logging.WARNING, logger="resilience_proxy"):
        sidecar = await start_sidecar(UPSTREAMS)
    assert any("lost on restart" in record.getMessage() for record in caplog.records)
    assert sidecar.webhooks is not None
    accepted = await sidecar.webhooks.accept(inbound("k1"), dedupe_window=DAY, log_retention=WEEK)
    await until(lambda: accepted.event_id in app.ids())


async def test_no_webhooks_no_store(start_sidecar) -> None:  # type: ignore[no-untyped-def]
    sidecar = await start_sidecar(UPSTREAMS)
    assert (sidecar.webhooks, sidecar.delivery) == (None, None)


async def test_sigterm_hands_back_what_was_not_delivered_and_the_next_replica_delivers_it(  # type: ignore[no-untyped-def]
        tmp_path, redis_url, app) -> None:
    webhooks_policy(tmp_path, app, concurrency=2)
    app.hold = asyncio.Event()
    settings: dict[str, Any] = {"state": {"backend": "redis", "redis_url": redis_url}, "shutdown_grace": "500ms"}
    first = SidecarProcess(tmp_path, UPSTREAMS, **settings)
    store = RedisWebhookStore(redis_url, timeout=2.0)
    await store.start()
    second: SidecarProcess | None = None
    try:
        await first.wait_ready()
        ids = [(await store.accept(inbound(f"k{i}"), dedupe_window=DAY, log_retention=WEEK)).event_id
               for i in range(6)]
        await until(lambda: len(app.received) == 2)  # its concurrency
        first.signal(signal.SIGTERM)
        assert await first.wait_exit() == 0
        records = [await store.event("twilio_status", i) for i in ids]
        assert {(r.status, r.attempts) for r in records if r} == {(EventStatus.PENDING, 0)}
        app.hold.set()
        (tmp_path / "second").mkdir()
        webhooks_policy(tmp_path / "second", app)
        second = SidecarProcess(tmp_path / "second", UPSTREAMS, **settings)
        await second.wait_ready()

        async def all_completed() -> bool:
            found = [await store.event("twilio_status", i) for i in ids]
            return {r.status for r in found if r} == {EventStatus.COMPLETED}

        await until(all_completed)
        assert set(app.ids()) >= set(ids)
    finally:
        await store.close()
        first.stop()
        if second is not None:
            second.stop()
