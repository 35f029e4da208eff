"""Two sidecar processes sharing one real Redis: one breaker for the whole fleet.

Each test starts two `python -m proxy run` subprocesses on the session's own redis-server, in
front of one scripted upstream on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.processes import SidecarProcess

TOKEN = "fleet-token"


@pytest.fixture
async def fleet(tmp_path: Path, redis_server, scripted) -> AsyncIterator[list[SidecarProcess]]:  # type: ignore[no-untyped-def]
    _, url = scripted
    upstreams = {"api": {"url": url, "breaker": {"consecutive_failures": 3, "open_for": "1s", "jitter": 0,
                                                 "half_open_probes": 2}}}
    state = {"backend": "redis", "redis_url": redis_server.url, "redis_timeout": "50ms",
             "key_prefix": f"rp-{tmp_path.name}:"}
    sidecars = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        sidecars.append(SidecarProcess(tmp_path / name, upstreams, state=state,
                                       admin_token=TOKEN, log={"level": "info", "access": False}))
    for sidecar in sidecars:
        await sidecar.wait_ready()
    yield sidecars
    for sidecar in sidecars:
        sidecar.stop()


async def get(http: aiohttp.ClientSession, sidecar: SidecarProcess) -> int:
    async with http.get(sidecar.url + "/api/x") as response:
        await response.read()
        return response.status


async def poll(predicate, deadline: float) -> float:  # type: ignore[no-untyped-def]
    """Await ``predicate()`` until true; returns how long it took."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < deadline, f"not reached within {deadline}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_breaker_opened_through_one_replica_rejects_at_the_other_within_a_second(fleet, scripted) -> None:  # type: ignore[no-untyped-def]
    a, b = fleet
    upstream, _ = scripted
    upstream.status = 500
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            assert await get(http, a) == 500
        took = await poll(lambda: _is(get(http, b), 503), deadline=1.0)
        hits = upstream.hits
        assert [await get(http, b) for _ in range(5)] == [503] * 5
    assert took < 1.0
    # Once b has the news nothing more reaches the upstream through it. (How many requests raced the news
    # depends on the machine's load: at load 12, 4 of them, so their count is not the test.)
    assert upstream.hits == hits, "b forwarded after its breaker showed open"


async def test_half_open_admits_exactly_the_configured_probes_across_the_fleet(fleet, scripted) -> None:  # type: ignore[no-untyped-def]
    a, b = fleet
    upstream, _ = scripted
    upstream.status = 500
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            await get(http, a)
        await poll(lambda: _is(get(http, b), 503), deadline=1.0)
        hits_before = upstream.hits
        upstream.status, upstream.delay = 200, 0.5
        await asyncio.sleep(1.1)  # the open time
        statuses = await asyncio.gather(*(get(http, replica) for replica in (a, b) * 10))
    assert upstream.hits - hits_before == 2
    assert sorted(statuses).count(200) == 2 and statuses.count(503) == 18


async def test_forced_open_through_one_admin_port_applies_at_both(fleet, scripted) -> None:  # type: ignore[no-untyped-def]
    a, b = fleet
    upstream, _ = scripted
    async with aiohttp.ClientSession() as http:
        url = a.admin_url + "/admin/breakers/api/default/force-open?by=oncall"
        async with http.post(url) as response:
            assert response.status == 401, "a mutation without the token is refused"
        async with http.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
        await poll(lambda: _is(get(http, b), 503), deadline=1.0)
        async with http.get(b.admin_url + "/admin/breakers") as response:
            (breaker,) = (await response.json())["breakers"]
        assert (breaker["state"], breaker["forced_by"]) == ("forced_open", "oncall")
    assert upstream.hits == 0


async def test_redis_dying_mid_traffic_fails_no_request_and_sharing_resumes(fleet, scripted, redis_server) -> None:  # type: ignore[no-untyped-def]
    a, b = fleet
    upstream, _ = scripted
    async with aiohttp.ClientSession() as http:
        slowest = 0.0

        async def timed(replica: SidecarProcess) -> int:
            nonlocal slowest
            started = time.monotonic()
            status = await get(http, replica)
            slowest = max(slowest, time.monotonic() - started)
            return status

        for _ in range(20):
            assert await timed(a) == 200 and await timed(b) == 200
        redis_server.kill()
        for _ in range(40):
            assert await timed(a) == 200 and await timed(b) == 200
        await poll(lambda: _readiness_reason(http, a, "ready"), deadline=3.0)  # not required: stays ready
        assert slowest < 0.5, f"a request waited {slowest:.3f}s while Redis was down"

        upstream.status = 500  # breakers keep working, per replica, while Redis is gone
        for _ in range(3):
            await get(http, a)
        assert await get(http, a) == 503

        redis_server.restart()
        upstream.status = 200
        await asyncio.sleep(1.1)
        await poll(lambda: _is(get(http, a), 200), deadline=5.0)  # a probe closes a's local breaker

        async def shared_again() -> bool:  # after resync, a trip through b is seen at a
            upstream.status = 500
            for _ in range(3):
                await get(http, b)
            return await get(http, a) == 503

        await poll(shared_again, deadline=10.0)


async def _is(awaitable, expected: Any) -> bool:  # type: ignore[no-untyped-def]
    return await awaitable == expected


async def _readiness_reason(http: aiohttp.ClientSession, sidecar: SidecarProcess, reason: str) -> bool:
    async with http.get(sidecar.admin_url + "/readyz") as response:
        return (await response.json())["status"] == reason
