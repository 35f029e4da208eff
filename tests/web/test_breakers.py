"""Breakers through a running sidecar, against a scripted upstream on 127.0.0.1 (the `scripted` fixture)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.conftest import StartSidecar, admin_url, base_url

MESSAGES = "/2010-04-01/Accounts/AC123/Messages.json"


def twilio(url: str, **extra: Any) -> dict[str, Any]:
    config = {
        "url": url, "prefix": "/twilio",
        "breaker": {"consecutive_failures": 3, "open_for": "1s", "jitter": 0},
        "routes": [
            {"name": "twilio_whatsapp", "methods": ["POST"], "path": "/2010-04-01/Accounts/{account}/Messages.json",
             "body": {"To": "whatsapp:*"}},
            {"name": "twilio_sms", "methods": ["POST"], "path": "/2010-04-01/Accounts/{account}/Messages.json"},
        ],
    }
    config.update(extra)
    return {"twilio": config}


async def send(http: aiohttp.ClientSession, sidecar_url: str, to: str = "+15550001111") -> aiohttp.ClientResponse:
    async with http.post(sidecar_url + "/twilio" + MESSAGES, data={"To": to, "Body": "hi"}) as response:
        await response.read()
        return response


async def poll(predicate, deadline: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not await predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_opens_after_three_failures_fails_fast_then_one_probe_closes_it(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(twilio(url))
    upstream.status = 500
    for _ in range(3):
        assert (await send(http, base_url(sidecar))).status == 500
    assert upstream.hits == 3

    rejected = await send(http, base_url(sidecar))
    assert rejected.status == 503
    assert rejected.headers["Proxy-Status"] == (
        'resilience-proxy; error=destination_unavailable; details="circuit twilio_sms open"')
    assert rejected.headers["Retry-After"] == "1"
    for _ in range(5):
        assert (await send(http, base_url(sidecar))).status == 503
    assert upstream.hits == 3, "an open breaker never touches the upstream"

    upstream.status, upstream.delay = 201, 0.3
    await asyncio.sleep(1.05)
    probe = asyncio.create_task(send(http, base_url(sidecar)))
    await poll(lambda: asyncio.sleep(0, upstream.hits == 4))
    assert (await send(http, base_url(sidecar))).status == 503, "only one probe while half-open"
    assert (await probe).status == 201
    upstream.delay = 0
    assert (await send(http, base_url(sidecar))).status == 201
    assert upstream.hits == 5


async def test_sms_and_whatsapp_have_separate_breakers(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(twilio(url))
    upstream.status = 503
    for _ in range(3):
        await send(http, base_url(sidecar), to="whatsapp:+15550001111")
    whatsapp = await send(http, base_url(sidecar), to="whatsapp:+15550001111")
    assert 'details="circuit twilio_whatsapp open"' in whatsapp.headers["Proxy-Status"]
    upstream.status = 201
    sms = await send(http, base_url(sidecar), to="+15550001111")
    assert sms.status == 201
    assert upstream.bodies[-1] == "To=%2B15550001111&Body=hi", "a body read for routing is forwarded intact"


async def test_route_overrides_the_upstreams_breaker(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    config = twilio(url)
    config["twilio"]["routes"][1]["breaker"] = {"consecutive_failures": 5}
    sidecar = await start_sidecar(config)
    upstream.status = 500
    for _ in range(5):
        assert (await send(http, base_url(sidecar))).status == 500
    assert (await send(http, base_url(sidecar))).status == 503
    assert upstream.hits == 5


async def test_failure_rate_with_a_minimum_number_of_calls(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar({"api": {
        "url": url, "breaker": {"consecutive_failures": 0, "failure_rate": "50%", "min_calls": 10, "window": "60s",
                                "open_for": "1s"}}})

    async def get(status: int) -> int:
        upstream.status = status
        async with http.get(base_url(sidecar) + "/api/x") as response:
            return response.status

    for status in [500, 200] * 4 + [500]:  # 5 of 9 failed: too few calls to judge
        assert await get(status) == status
    assert await get(200) == 200          # 5 of 10: 50%, trips
    assert await get(200) == 503


async def test_429_and_4xx_are_not_breaker_failures(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(twilio(url))
    for status in (429, 429, 429, 400, 404, 429):
        upstream.status = status
        assert (await send(http, base_url(sidecar))).status == status
    assert upstream.hits == 6


async def test_connection_refused_counts_as_failure(http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    from tests.conftest import free_port

    sidecar = await start_sidecar({"down": {"url": f"http://127.0.0.1:{free_port()}",
                                            "breaker": {"consecutive_failures": 2, "open_for": "5s"}}})
    statuses = []
    for _ in range(3):
        async with http.get(base_url(sidecar) + "/down/x") as response:
            statuses.append((response.status, response.headers["Proxy-Status"].split(";")[1].strip()))
    assert statuses == [(502, "error=connection_refused")] * 2 + [(503, "error=destination_unavailable")]


async def test_admin_lists_breakers_and_operators_override_them_with_the_token(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(twilio(url), admin={"listen": "127.0.0.1:0", "token": "s3cret"})
    admin = admin_url(sidecar)
    async with http.get(admin + "/admin/breakers") as response:
        listed = (await response.json())["breakers"]
    assert [(b["name"], b["state"]) for b in listed] == [
        ("twilio_whatsapp", "closed"), ("twilio_sms", "closed"), ("twilio", "closed")]

    force = admin + "/admin/breakers/twilio/twilio_sms/force-open"
    async with http.post(force) as response:
        assert response.status == 401
    async with http.post(force, headers={"Authorization": "Bearer wrong"}) as response:
        assert response.status == 401
    auth = {"Authorization": "Bearer s3cret"}
    async with http.post(force + "?by=alice", headers=auth) as response:
        assert response.status == 200
        assert (await response.json())["breaker"]["state"] == "forced_open"

    rejected = await send(http, base_url(sidecar))
    assert rejected.status == 503
    assert 'details="circuit twilio_sms forced open by alice"' in rejected.headers["Proxy-Status"]
    assert upstream.hits == 0
    async with http.get(admin + "/admin/breakers") as response:
        sms = next(b for b in (await response.json())["breakers"] if b["name"] == "twilio_sms")
    assert (sms["state"], sms["forced_by"]) == ("forced_open", "alice")

    async with http.post(admin + "/admin/breakers/twilio/twilio_sms/disable", headers=auth,
                         json={"by": "bob"}) as response:
        assert (await response.json())["breaker"]["state"] == "disabled"
    upstream.status = 500
    for _ in range(5):
        assert (await send(http, base_url(sidecar))).status == 500, "a disabled breaker never opens"
    async with http.post(admin + "/admin/breakers/twilio/twilio_sms/reset", headers=auth) as response:
        assert (await response.json())["breaker"]["state"] == "closed"
    async with http.post(admin + "/admin/breakers/twilio/nope/reset", headers=auth) as response:
        assert response.status == 404


async def test_admin_mutations_are_refused_without_a_configured_token(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(twilio(url))
    async with http.post(admin_url(sidecar) + "/admin/breakers/twilio/twilio_sms/force-open",
                         headers={"Authorization": "Bearer "}) as response:
        assert response.status == 403
