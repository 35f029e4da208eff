"""``GET /admin/status`` and ``GET /admin/stream`` on a running sidecar, against a scripted upstream."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from proxy.web.admin import stream as stream_module
from tests.conftest import StartSidecar, admin_url, base_url
from tests.sse import messages, next_event

MESSAGES = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json"
TOKEN = "s3cret-admin-token"


def twilio(url: str) -> dict[str, Any]:
    return {"twilio": {
        "url": url, "prefix": "/twilio",
        "breaker": {"consecutive_failures": 3, "open_for": "30s", "jitter": 0},
        "rate_limits": [{"name": "per-org", "key": "org", "limit": 1000, "per": "1h", "on_missing_key": "anonymous"},
                        {"name": "tight", "key": "org", "limit": 2, "per": "1h", "burst": 0, "shadow": True}],
        "routes": [{"name": "twilio_sms", "methods": ["POST"], "path": "/2010-04-01/Accounts/{account}/Messages.json"}],
    }}


async def send(http: aiohttp.ClientSession, sidecar_url: str, **headers: str) -> int:
    async with http.post(sidecar_url + "/twilio" + MESSAGES, data={"To": "+15557654321", "Body": "your code is 4711"},
                         headers={"X-Org-Id": "acme-org", **headers}) as response:
        await response.read()
        return response.status


async def status(http: aiohttp.ClientSession, sidecar: Any) -> dict[str, Any]:
    async with http.get(admin_url(sidecar) + "/admin/status") as response:
        assert response.status == 200
        return await response.json()  # type: ignore[no-any-return]


def route(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in document["routes"] if r["route"] == name)


async def test_the_document_shows_the_open_breaker_and_the_last_minute(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(twilio(url), admin={"listen": "127.0.0.1:0", "token": TOKEN})
    assert [await send(http, base_url(sidecar)) for _ in range(2)] == [200, 200]
    upstream.status = 503
    assert [await send(http, base_url(sidecar)) for _ in range(4)] == [503, 503, 503, 503]

    document = await status(http, sidecar)
    sms = route(document, "twilio_sms")
    breaker = sms["breaker"]
    assert (breaker["state"], breaker["reason"], breaker["name"]) == ("open", "3 consecutive failures", "twilio_sms")
    assert 25 < breaker["seconds_left"] <= 30
    assert document["generated_at"] - 5 < breaker["since"] <= document["generated_at"]
    assert (sms["requests"], sms["error_ratio"]) == (6, pytest.approx(4 / 6, abs=1e-3))
    assert sms["p50_ms"] is not None and sms["p99_ms"] >= sms["p50_ms"]
    assert {limit["name"]: (limit["allowed"], limit["limited"], limit["shadow_limited"]) for limit in sms["limits"]} \
        == {"per-org": (6, 0, 0), "tight": (1, 0, 5)}, "limits decide before the breaker: its fast failures count"
    assert route(document, "default")["requests"] == 0
    (transition,) = document["transitions"]
    assert (transition["route"], transition["from"], transition["to"], transition["by"]) == (
        "twilio_sms", "closed", "open", "this process")
    assert document["scopes"] == {"breakers": "process", "traffic": "process", "webhooks": "process"}
    assert document["state_backend"] == {"kind": "memory", "up": True, "required": False}
    assert (document["config"]["version"], document["config"]["last_reload"]) == (sidecar.running.version, None)
    assert (document["admin"], document["webhooks"]) == ({"token_configured": True}, None)


async def test_no_client_value_reaches_the_document_or_the_stream(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    """Phone numbers, bodies, request ids, credentials and query strings stay out; org ids may appear."""
    upstream, url = scripted
    upstream.status = 500
    sidecar = await start_sidecar(twilio(url), admin={"listen": "127.0.0.1:0", "token": TOKEN})
    async with http.get(admin_url(sidecar) + "/admin/stream") as stream:
        events = messages(stream)
        await next_event(events, "snapshot")
        for _ in range(4):
            await send(http, base_url(sidecar), **{"X-Request-Id": "req-7f3a9c", "Authorization": "Basic QUMxMjM6c2VjcmV0",
                                                  "X-Forwarded-For": "198.51.100.23"})
        async with http.get(base_url(sidecar) + "/twilio/lookup?key=AIzaSyDsecret&PhoneNumber=%2B15557654321") as r:
            await r.read()
        await next_event(events, "transition")
        stats, _ = await next_event(events, "stats")
        text = json.dumps(await status(http, sidecar)) + stats.data
    for secret in ("5557654321", "4711", "req-7f3a9c", "QUMxMjM6c2VjcmV0", "198.51.100.23", "AIzaSyDsecret", "lookup",
                   "AC0123456789abcdef", TOKEN):
        assert secret not in text


async def test_the_stream_starts_with_retry_and_a_snapshot_then_pushes_a_transition_at_once(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(twilio(url))
    async with http.get(admin_url(sidecar) + "/admin/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-store"
        events = messages(response)
        first = await anext(events)
        assert (first.event, first.retry) == ("", stream_module.RETRY_MS)
        snapshot, _ = await next_event(events, "snapshot")
        assert route(snapshot.json(), "twilio_sms")["breaker"]["state"] == "closed"
        assert snapshot.json()["transitions"] == []

        upstream.status = 503
        for _ in range(3):
            await send(http, base_url(sidecar))
        transition, took = await next_event(events, "transition", deadline=2.0)
        assert (transition.json()["to"], transition.json()["reason"]) == ("open", "3 consecutive failures")
        assert took < 1.0, "transitions are pushed as they happen, not with the next stats"
        stats, _ = await next_event(events, "stats", deadline=3.0)
        assert route(stats.json(), "twilio_sms")["breaker"]["state"] == "open"
        assert "transitions" not in stats.json(), "stats carry no history: transitions come one by one"
        started = time.monotonic()
        await next_event(events, "stats", deadline=3.0)
        await next_event(events, "stats", deadline=3.0)
        assert 1.0 < time.monotonic() - started < 3.0, "stats about every second"


async def test_many_streams_and_streams_that_leave(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(stream_module, "MAX_CLIENTS", 30)
    _, url = scripted
    sidecar = await start_sidecar(twilio(url))
    sessions = [aiohttp.ClientSession() for _ in range(30)]
    try:
        responses = await asyncio.gather(*(s.get(admin_url(sidecar) + "/admin/stream") for s in sessions))
        firsts = await asyncio.gather(*(next_event(messages(r), "snapshot") for r in responses))
        assert len(firsts) == 30 and sidecar.status.stream.clients == 30
        async with http.get(admin_url(sidecar) + "/admin/stream") as refused:
            assert refused.status == 503 and "Retry-After" in refused.headers
        for response in responses:
            response.close()  # the browser tab went away: no goodbye
    finally:
        for session in sessions:
            await session.close()
    deadline = time.monotonic() + 5
    while sidecar.status.stream.clients:
        assert time.monotonic() < deadline, f"{sidecar.status.stream.clients} streams still held after their clients left"
        await asyncio.sleep(0.05)
    async with http.get(admin_url(sidecar) + "/admin/stream") as again:
        await next_event(messages(again), "snapshot")


async def test_closing_the_sidecar_ends_open_streams_at_once(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(twilio(url))
    async with http.get(admin_url(sidecar) + "/admin/stream") as response:
        events = messages(response)
        await next_event(events, "snapshot")
        started = time.monotonic()
        await sidecar.close()
        async with asyncio.timeout(5):
            async for _ in events:
                pass
        assert time.monotonic() - started < 0.9, "the stream ended before the admin listener's 1 s grace"


async def test_the_page_and_its_files_under_a_strict_content_security_policy(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(twilio(url))
    types = {"/": "text/html", "/status.js": "text/javascript", "/status.css": "text/css", "/favicon.svg": "image/svg+xml"}
    for path, content_type in types.items():
        async with http.get(admin_url(sidecar) + path) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith(content_type)
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'self';" in csp and "style-src 'self';" in csp
            assert "unsafe" not in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            body = await response.text()
    async with http.get(admin_url(sidecar) + "/") as response:
        page = await response.text()
    assert '<script src="/status.js"' in page and "<style" not in page and " style=" not in page
    assert page.count("<script") == 1, "no inline script"
    async with http.get(base_url(sidecar) + "/") as response:
        assert response.status == 404, "the page is on the admin port only"
    assert body


async def test_a_transition_another_replica_made_is_pushed_with_its_reason(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    """Two replicas sharing Redis: the one that did not open the breaker shows it open, fleet-wide."""
    upstream, url = scripted
    state = {"backend": "redis", "redis_url": redis_url, "redis_timeout": "250ms"}
    watched = await start_sidecar(twilio(url), state=state)
    failing = await start_sidecar(twilio(url), state=state)
    async with http.get(admin_url(watched) + "/admin/stream") as response:
        events = messages(response)
        snapshot, _ = await next_event(events, "snapshot")
        assert snapshot.json()["scopes"]["breakers"] == "fleet"
        upstream.status = 503
        for _ in range(3):
            assert await send(http, base_url(failing)) == 503
        transition, took = await next_event(events, "transition", deadline=3.0)
        assert transition.json() | {"at": None, "open_until": None} == {
            "upstream": "twilio", "route": "twilio_sms", "from": "closed", "to": "open",
            "reason": "3 consecutive failures", "at": None, "open_until": None, "by": "another replica"}
        assert took < 1.5
    document = await status(http, watched)
    assert route(document, "twilio_sms")["breaker"]["state"] == "open"
    assert route(document, "twilio_sms")["requests"] == 0, "traffic is this process's: the other replica's is not here"


async def test_webhook_queues_when_webhooks_exist(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "hooks.yaml").write_text(
        "webhooks:\n  twilio_status:\n    path: /hooks/twilio/status\n"
        f"    deliver_to: {url}/app\n    provider: none\n")
    sidecar = await start_sidecar(twilio(url))
    (queue,) = (await status(http, sidecar))["webhooks"]
    assert queue == {"name": "twilio_status", "available": True, "depth": 0, "oldest_pending_seconds": None,
                     "counts": {"pending": 0, "processing": 0, "completed": 0, "failed": 0, "dead_letter": 0}}
