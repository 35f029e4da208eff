"""Retries through a running sidecar against scripted upstreams on 127.0.0.1 (short backoffs)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import StartSidecar, base_url, free_port

MESSAGES = "/2010-04-01/Accounts/AC123/Messages.json"
FAST = {"initial": "100ms", "multiplier": 2, "max": "400ms", "jitter": 0}


def twilio(url: str, **retry: Any) -> dict[str, Any]:
    return {"twilio": {"url": url, "prefix": "/twilio", "breaker": False,
                       "retry": {"attempts": 3, "backoff": FAST, **retry}}}


async def post_sms(http: aiohttp.ClientSession, sidecar_url: str) -> aiohttp.ClientResponse:
    async with http.post(sidecar_url + "/twilio" + MESSAGES, data={"To": "+15550001111", "Body": "hi"}) as response:
        await response.read()
        return response


async def test_a_post_that_got_a_500_or_503_reaches_the_upstream_exactly_once(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(twilio(url, on=["connect_error", "timeout", 500, 502, 503, 504, 429]))
    for status in (500, 503):
        upstream.status, upstream.hits = status, 0
        response = await post_sms(http, base_url(sidecar))
        assert (response.status, upstream.hits) == (status, 1), "a retried POST would send a second SMS"
        assert response.headers["X-Resilience-Attempts"] == "1"


async def test_a_post_whose_connection_was_refused_is_retried(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar
) -> None:
    port = free_port()
    sidecar = await start_sidecar(twilio(f"http://127.0.0.1:{port}"))
    hits = 0

    async def created(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response({"sid": "SM1"}, status=201)

    app = web.Application()
    app.router.add_post("/{tail:.*}", created)
    runner = web.AppRunner(app)
    await runner.setup()
    sending = asyncio.create_task(post_sms(http, base_url(sidecar)))
    await asyncio.sleep(0.05)  # the first attempt finds nobody listening
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        response = await sending
    finally:
        await runner.cleanup()
    assert (response.status, hits) == (201, 1)
    assert int(response.headers["X-Resilience-Attempts"]) >= 2


async def test_a_429_with_retry_after_is_retried_after_it_and_succeeds(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.script, upstream.status, upstream.headers = [429], 201, {"Retry-After": "1"}
    sidecar = await start_sidecar(twilio(url, not_processed=[429]))
    started = time.monotonic()
    response = await post_sms(http, base_url(sidecar))
    assert (response.status, upstream.hits, response.headers["X-Resilience-Attempts"]) == (201, 2, "2")
    assert upstream.times[1] - upstream.times[0] >= 1.0
    assert time.monotonic() - started < 3


async def test_a_retry_after_longer_than_the_deadline_fails_fast(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.status, upstream.headers = 429, {"Retry-After": "5"}
    sidecar = await start_sidecar(twilio(url, not_processed=[429], deadline="2s"))
    started = time.monotonic()
    response = await post_sms(http, base_url(sidecar))
    assert (response.status, upstream.hits) == (429, 1)
    assert response.headers["Retry-After"] == "5", "the client sees the upstream's answer"
    assert time.monotonic() - started < 1


async def test_a_get_on_503_is_retried_with_backoff_and_succeeds(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.script = [503, 503]
    sidecar = await start_sidecar(twilio(url))
    async with http.get(base_url(sidecar) + "/twilio" + MESSAGES) as response:
        assert response.status == 200
        assert response.headers["X-Resilience-Attempts"] == "3"
    gaps = [later - earlier for earlier, later in zip(upstream.times, upstream.times[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, f"backoff 100 ms then 200 ms, got {gaps}"


async def test_an_upload_larger_than_the_replay_limit_is_not_retried(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.status = 503
    sidecar = await start_sidecar(twilio(url, replay_limit="1KiB"))
    async with http.put(base_url(sidecar) + "/twilio/media", data=b"x" * 4096) as response:
        assert response.status == 503
    assert upstream.hits == 1 and len(upstream.bodies[0]) == 4096
    upstream.hits = 0
    async with http.put(base_url(sidecar) + "/twilio/media", data=b"y" * 512) as response:
        assert response.status == 503
    assert upstream.hits == 4 and set(upstream.bodies[-3:]) == {"y" * 512}, "a small body is replayed intact"


async def test_the_retry_budget_stops_retries_in_a_failure_storm(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.status = 503
    sidecar = await start_sidecar(twilio(url, backoff={"initial": "10ms", "max": "10ms", "jitter": 0},
                                         budget={"ratio": "20%", "min_per_second": 0}))
    requests = 50
    statuses = await asyncio.gather(*(_get(http, base_url(sidecar)) for _ in range(requests)))
    assert statuses == [503] * requests
    assert requests < upstream.hits <= requests * 1.2, f"{upstream.hits} upstream hits for {requests} requests"


async def test_retries_stop_once_the_breaker_opens(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.status = 503
    config = twilio(url)
    config["twilio"]["breaker"] = {"consecutive_failures": 2, "open_for": "5s"}
    sidecar = await start_sidecar(config)
    assert await _get(http, base_url(sidecar)) == 503
    assert upstream.hits == 2, "the second failure opened the breaker: no third attempt"
    async with http.get(base_url(sidecar) + "/twilio/x") as response:
        assert response.headers["Proxy-Status"].startswith("resilience-proxy; error=destination_unavailable")
    assert upstream.hits == 2


async def _get(http: aiohttp.ClientSession, sidecar_url: str) -> int:
    async with http.get(sidecar_url + "/twilio/x") as response:
        await response.read()
        return response.status


async def test_a_slow_get_is_retried_with_the_per_try_timeout_within_the_deadline(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.delay = 1.0  # every attempt is too slow
    sidecar = await start_sidecar(twilio(url, per_try_timeout="200ms", deadline="1s"))
    started = time.monotonic()
    async with http.get(base_url(sidecar) + "/twilio/x") as response:
        body = await response.json()
    took = time.monotonic() - started
    assert (response.status, body["code"]) == (504, "http_response_timeout")
    assert upstream.hits >= 2, "timeouts of a GET are retried"
    assert took < 1.5, f"the deadline bounds the whole request, took {took:.2f}s"
