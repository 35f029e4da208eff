"""Rate limits when Redis dies or hangs: each limit's on_backend_error, and no call waits longer
than the Redis timeout. A private redis-server per test, so that killing it harms no other test."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import StartSidecar, base_url
from tests.redis_server import RedisServer

TIMEOUT = 0.05
SLACK = 0.15
"""Loopback, the upstream and the event loop's own work, on a busy 2-core CI machine."""


def limits(url: str) -> dict:  # type: ignore[type-arg]
    return {"api": {"url": url, "breaker": False, "routes": [
        {"name": "open", "path": "/open", "rate_limits": [
            {"name": "lenient", "key": "global", "limit": 1000, "per": "1s"}]},
        {"name": "shared", "path": "/shared", "rate_limits": [
            {"name": "local-share", "key": "global", "limit": 10, "per": "1h", "local_share": 0.3}]},
        {"name": "strict", "path": "/strict", "rate_limits": [
            {"name": "per-tenant", "key": "global", "limit": 1000, "per": "1s", "on_backend_error": "deny"}]},
    ]}}


async def timed(http: aiohttp.ClientSession, url: str) -> tuple[int, float, str]:
    started = time.monotonic()
    async with http.get(url) as response:
        await response.read()
        return response.status, time.monotonic() - started, response.headers.get("Proxy-Status", "")


async def poll(predicate, deadline: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("failure", ["killed", "hung"])
async def test_allow_and_deny_limits_without_redis_and_no_call_waits_past_the_timeout(
    failure: str, http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted, own_redis: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(limits(url), state={"backend": "redis", "redis_url": own_redis.url,
                                                      "redis_timeout": f"{int(TIMEOUT * 1000)}ms"})
    api = base_url(sidecar) + "/api"
    assert (await timed(http, api + "/strict"))[0] == 200

    own_redis.kill() if failure == "killed" else own_redis.pause()
    results = {path: [await timed(http, api + path) for _ in range(6)] for path in ("/strict", "/open", "/shared")}

    assert all(seconds < TIMEOUT + SLACK for calls in results.values() for _, seconds, _ in calls), results
    assert [status for status, _, _ in results["/strict"]] == [503] * 6
    assert results["/strict"][0][2] == ('resilience-proxy; error=http_request_denied; '
                                        'details="rate limit per-tenant: state backend unavailable"')
    assert [status for status, _, _ in results["/open"]] == [200] * 6
    assert [status for status, _, _ in results["/shared"]] == [200, 200, 200, 429, 429, 429], \
        "30% of 10 per hour enforced in this process meanwhile"
    assert sidecar.limits.backend_up is False

    if failure == "killed":
        own_redis.start()
    else:
        own_redis.resume()
    await poll(lambda: sidecar.limits.backend_up)
    assert (await timed(http, api + "/strict"))[0] == 200
