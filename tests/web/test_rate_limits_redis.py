"""Rate limits on the Redis backend through in-process sidecars: what the fleet shares, and what
never costs a round trip."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import redis

from tests.conftest import StartSidecar, base_url


def evalsha_calls(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def api(url: str, limits: list[dict[str, Any]]) -> dict[str, Any]:
    return {"api": {"url": url, "breaker": False, "rate_limits": limits}}


async def status(http: aiohttp.ClientSession, sidecar: Any, **headers: str) -> int:
    async with http.get(base_url(sidecar) + "/api/x", headers=headers) as response:
        await response.read()
        return response.status


async def test_a_spent_key_is_rejected_locally_until_it_may_pass_again(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(api(url, [{"name": "per-org", "key": "org", "limit": 2, "per": "1s", "burst": 0}]),
                                  state={"backend": "redis", "redis_url": redis_url})
    assert await status(http, sidecar, **{"X-Org-Id": "a"}) == 200
    assert await status(http, sidecar, **{"X-Org-Id": "a"}) == 429
    before = evalsha_calls(redis_url)
    assert [await status(http, sidecar, **{"X-Org-Id": "a"}) for _ in range(10)] == [429] * 10
    assert evalsha_calls(redis_url) == before, "rejections of a known-spent key cost no round trip"
    assert await status(http, sidecar, **{"X-Org-Id": "b"}) == 200
    assert evalsha_calls(redis_url) == before + 1, "other keys still ask Redis, once per request"
    await asyncio.sleep(0.5)  # one call every 0.5 s: the key may pass again
    assert await status(http, sidecar, **{"X-Org-Id": "a"}) == 200


async def test_an_upstream_retry_after_holds_the_key_for_every_replica(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    config = api(url, [{"name": "account", "key": "global", "limit": 100, "per": "1s"}])
    state = {"backend": "redis", "redis_url": redis_url}
    a = await start_sidecar(config, state=state)
    b = await start_sidecar(config, state=state)
    upstream.script, upstream.headers = [429], {"Retry-After": "20"}
    assert await status(http, a) == 429
    deadline = time.monotonic() + 2.0
    while (answer := await status(http, b)) == 200:  # the hold is written in the background
        assert time.monotonic() < deadline, "replica b never saw the hold"
        await asyncio.sleep(0.02)
    assert answer == 429
    async with http.get(base_url(b) + "/api/x") as response:
        assert 18 <= int(response.headers["Retry-After"]) <= 20
        assert 'details="rate limit account"' in response.headers["Proxy-Status"]
