"""The webhooks listener on a real redis-server: events durable before the answer, and on_backend_error
(passthrough | reject) when Redis is down."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import pytest

from proxy.config.webhooks import TwilioAuth, Webhook
from proxy.events import WebhookReceived
from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import EventStatus
from proxy.web.webhooks import EMPTY_TWIML
from tests.web.webhook_rig import PUBLIC, STATUS, TOKEN, TWIML, App, app_server, post, serving, signed

PATH = "/hooks/twilio/status"


def hook(app_url: str, **changes: Any) -> Webhook:
    return replace(Webhook("status", PATH, f"{app_url}/twilio/status", "twilio", twilio=TwilioAuth(TOKEN, PUBLIC)),
                   **changes)


@pytest.fixture
async def store(own_redis: Any) -> AsyncIterator[RedisWebhookStore]:
    store = RedisWebhookStore(own_redis.url, timeout=0.5, retry_interval=0.1)
    await store.start()
    yield store
    await store.close()


async def test_an_accepted_event_is_in_redis_when_the_provider_gets_its_answer(store: RedisWebhookStore) -> None:
    app = App()
    events: list[WebhookReceived] = []
    async with app_server(app) as app_url, serving(lambda: (hook(app_url),), store, events.append) as url:
        headers = {**signed(STATUS), "I-Twilio-Idempotency-Token": "idem-1"}
        status, _, body = await post(url + PATH, urlencode(STATUS).encode(), headers)
        assert (status, body) == (200, EMPTY_TWIML)
        (record,) = await store.events("status", None, 10)
        assert (record.status, record.event_type) == (EventStatus.PENDING, "delivered")
        assert (await post(url + PATH, urlencode(STATUS).encode(), headers))[2] == EMPTY_TWIML
        assert len(await store.events("status", None, 10)) == 1
    assert [e.result for e in events] == ["accepted", "duplicate"]
    assert app.received == []


async def test_a_sync_duplicate_across_replicas_gets_the_original_twiml_from_redis(own_redis: Any) -> None:
    app = App(body=TWIML, content_type="application/xml")
    events: list[WebhookReceived] = []
    stores = [RedisWebhookStore(own_redis.url, timeout=0.5) for _ in range(2)]  # two replicas, one Redis
    for one in stores:
        await one.start()
    try:
        async with app_server(app) as app_url:
            hooks = lambda: (hook(app_url, mode="sync"),)
            async with serving(hooks, stores[0], events.append) as first, \
                    serving(hooks, stores[1], events.append) as second:
                answers = [await post(url + PATH, urlencode(STATUS).encode(), signed(STATUS)) for url in (first, second)]
    finally:
        for one in stores:
            await one.close()
    assert [(status, h["Content-Type"], body) for status, h, body in answers] == [(200, "application/xml", TWIML)] * 2
    assert len(app.received) == 1
    assert [e.result for e in events] == ["delivered_sync", "duplicate"]


async def redis_down(store: RedisWebhookStore, own_redis: Any) -> None:
    own_redis.kill()
    end = time.monotonic() + 10
    while store.backend_up and time.monotonic() < end:  # the first failed call takes it down
        try:
            await store.stats("status")
        except Exception:
            pass
    assert not store.backend_up


@pytest.mark.parametrize("mode", ["queue", "sync"])
async def test_passthrough_forwards_at_once_and_answers_with_the_apps_reply(
        store: RedisWebhookStore, own_redis: Any, mode: str) -> None:
    app = App(body=TWIML, content_type="text/xml")
    events: list[WebhookReceived] = []
    async with app_server(app) as app_url, serving(lambda: (hook(app_url, mode=mode),), store, events.append) as url:
        await redis_down(store, own_redis)
        status, headers, body = await post(url + PATH, urlencode(STATUS).encode(), signed(STATUS))
    assert (status, headers["Content-Type"], body) == (200, "text/xml", TWIML)
    ((method, path, sent, payload),) = app.received
    assert (method, path, payload, sent["X-Webhook-Attempt"]) == ("POST", "/twilio/status",
                                                                 urlencode(STATUS).encode(), "1")
    assert len(sent["X-Webhook-Id"]) == 32
    assert [e.result for e in events] == ["passthrough" if mode == "queue" else "delivered_sync"]


async def test_passthrough_with_the_app_down_tells_the_provider_to_retry(
        store: RedisWebhookStore, own_redis: Any) -> None:
    async with serving(lambda: (hook("http://127.0.0.1:9"),), store, lambda e: None) as url:
        await redis_down(store, own_redis)
        status, headers, _ = await post(url + PATH, urlencode(STATUS).encode(), signed(STATUS))
    assert status == 502 and headers["Proxy-Status"].startswith("resilience-proxy; error=connection_refused")


@pytest.mark.parametrize("mode", ["queue", "sync"])
async def test_reject_answers_503_with_retry_after_and_delivers_nothing(
        store: RedisWebhookStore, own_redis: Any, mode: str) -> None:
    app = App(status=500)
    events: list[WebhookReceived] = []
    hooks = lambda: (hook(app_url, on_backend_error="reject", mode=mode),)  # noqa: E731
    async with app_server(app) as app_url, serving(hooks, store, events.append) as url:
        await redis_down(store, own_redis)
        status, headers, _ = await post(url + PATH, urlencode(STATUS).encode(), signed(STATUS))
    assert (status, headers["Retry-After"]) == (503, "5")
    assert headers["Proxy-Status"].startswith("resilience-proxy; error=proxy_internal_error")
    assert len(app.received) == (1 if mode == "sync" else 0)  # sync tried the app first: it failed
    assert [e.result for e in events] == ["rejected_backend"]


async def test_a_forged_request_is_refused_before_redis_is_asked(store: RedisWebhookStore, own_redis: Any) -> None:
    app = App()
    async with app_server(app) as app_url, serving(lambda: (hook(app_url),), store, lambda e: None) as url:
        await redis_down(store, own_redis)
        status, _, _ = await post(url + PATH, urlencode(STATUS).encode(), {"X-Twilio-Signature": "forged"})
    assert status == 403 and app.received == []
