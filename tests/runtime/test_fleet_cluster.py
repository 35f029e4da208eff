"""Two sidecar processes on one Redis Cluster (``redis+cluster://``), and the master serving a breaker
and a rate limit SIGKILLed mid-traffic while its replica is promoted.

Each test starts its own 3-master, 3-replica cluster on loopback (tests/cluster_servers.py) and two
``python -m proxy run`` subprocesses in front of one scripted upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from proxy.config.policy_values import KeyKind, LimitPolicy, Rate
from proxy.policy.ratelimit import Check
from proxy.state.redis.breaker_scripts import hash_key
from proxy.state.redis.limit_shards import shard_key
from tests.cluster_servers import ClusterSet
from tests.metrics_text import sample_value
from tests.processes import SidecarProcess
from tests.runtime.test_fleet import poll

TOKEN = "fleet-token"
PREFIX = "rp:"
BREAKER = "api/default"
LIMIT = 50
"""Per org and hour, all at once (burst limit - 1), then one every 72 s."""


@pytest.fixture
async def fleet(tmp_path: Path, scripted) -> AsyncIterator[tuple[ClusterSet, list[SidecarProcess]]]:  # type: ignore[no-untyped-def]
    cluster = ClusterSet(tmp_path / "cluster")
    sidecars: list[SidecarProcess] = []
    try:
        cluster.start()
        _, url = scripted
        upstreams = {"api": {"url": url, "retry": False,
                             "breaker": {"consecutive_failures": 3, "open_for": "1s", "jitter": 0},
                             "rate_limits": [{"name": "per-org", "key": "org", "limit": LIMIT, "per": "1h"}]}}
        # 1 s (the most allowed): the exact counts must not meet a stall of a busy machine; the killed master
        # fails its calls at once (reset, refused), whatever the timeout
        state = {"backend": "redis", "redis_url": cluster.url(), "redis_timeout": "1s", "key_prefix": PREFIX}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            sidecars.append(SidecarProcess(tmp_path / name, upstreams, state=state, admin_token=TOKEN,
                                           log={"level": "info", "access": False}))
        for sidecar in sidecars:
            await sidecar.wait_ready()
        yield cluster, sidecars
    finally:
        for sidecar in sidecars:
            sidecar.stop()
        cluster.stop()


def org_bucket(org: str) -> str:
    rate = Rate(LIMIT, 3600.0, LIMIT - 1)
    return shard_key(PREFIX, Check(LimitPolicy("per-org", KeyKind.ORG, rate), "api", f"per-org:{org}", rate))


async def call(http: aiohttp.ClientSession, sidecar: SidecarProcess, org: str) -> int:
    async with http.get(sidecar.url + "/api/x", headers={"X-Org-Id": org}) as response:
        await response.read()
        return response.status


async def sharing(http: aiohttp.ClientSession, sidecar: SidecarProcess) -> bool:
    """The sidecar's breakers and rate limits are on Redis (not the local fallback)."""
    async with http.get(sidecar.admin_url + "/metrics") as response:
        return sample_value(await response.text(), "resilience_proxy_state_backend_up") == 1


async def test_a_master_killed_mid_traffic_fails_no_request_and_the_fleet_shares_state_again(fleet, scripted) -> None:  # type: ignore[no-untyped-def]
    cluster, (a, b) = fleet
    upstream, _ = scripted
    doomed = cluster.master_for_key(hash_key(PREFIX, BREAKER))
    orgs = [org for org in (f"org-{n}" for n in range(400)) if cluster.master_for_key(org_bucket(org)) is doomed]
    fresh, traffic_orgs = orgs[0], orgs[1:]  # about 130 orgs: none of them reaches its limit
    statuses: list[int] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await poll(lambda: _all(sharing(http, a), sharing(http, b)), deadline=10.0)
        slowest = 0.0

        async def traffic() -> None:
            nonlocal slowest
            for sidecar in (a, b):
                started = time.monotonic()
                statuses.append(await call(http, sidecar, traffic_orgs[len(statuses) % len(traffic_orgs)]))
                slowest = max(slowest, time.monotonic() - started)

        for _ in range(20):
            await traffic()
        killer = asyncio.get_running_loop().run_in_executor(None, cluster.kill_and_wait_for_promotion, doomed)
        while not killer.done():
            await traffic()
        promoted = await killer
        await poll(lambda: _traffic_until(traffic, _all(sharing(http, a), sharing(http, b))), deadline=10.0)
        # Every request went through: the policy failed none (no breaker opened, no limit reached).
        assert set(statuses) == {200} and upstream.hits == len(statuses)
        assert slowest < 1.0, f"a request waited {slowest:.3f}s during the failover"

        # The fleet's state is on the promoted master: a limit shared by both sidecars is exact again...
        assert cluster.master_for_key(org_bucket(fresh)) is promoted
        # (In rounds of 10 at once: a 200-request burst can outlast redis_timeout on a busy machine, and a
        # timed-out call is allowed by on_backend_error, which is not what this checks.)
        passed = []
        for _ in range(4 * LIMIT // 10):
            passed += await asyncio.gather(*(call(http, (a, b)[i % 2], fresh) for i in range(10)))
        assert passed.count(200) == LIMIT and passed.count(429) == 3 * LIMIT, f"{a.log[-3000:]}\n{b.log[-3000:]}"
        # ...and a breaker forced open through one sidecar's admin API rejects at the other.
        async with http.post(a.admin_url + f"/admin/breakers/{BREAKER}/force-open?by=oncall",
                             headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 200
        await poll(lambda: _is(call(http, b, traffic_orgs[0]), 503), deadline=1.0)
        async with http.get(b.admin_url + "/admin/breakers") as response:
            (breaker,) = (await response.json())["breakers"]
        assert (breaker["state"], breaker["forced_by"]) == ("forced_open", "oncall")


async def _all(*checks) -> bool:  # type: ignore[no-untyped-def]
    return all(await asyncio.gather(*checks))


async def _traffic_until(traffic, condition) -> bool:  # type: ignore[no-untyped-def]
    await traffic()
    return bool(await condition)


async def _is(awaitable, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await awaitable == expected
