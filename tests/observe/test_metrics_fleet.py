"""The breaker-state gauge follows the fleet: two in-process sidecars sharing one real Redis.

Replica A opens the breaker; only A emits the transition, and replica B, which never saw a
request, must still report the breaker open from its own view of the shared state.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp

from proxy.config.load import load_config
from proxy.observe.gauges import state_families
from proxy.policy.breaker import State
from proxy.runtime.sidecar import Sidecar
from tests.conftest import admin_url, base_url, write_config
from tests.metrics_text import sample_value


async def test_the_breaker_state_gauge_shows_a_breaker_another_replica_opened(
    tmp_path: Path, redis_url: str, http: aiohttp.ClientSession, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    name = f"fleet{uuid.uuid4().hex[:8]}"
    upstreams = {name: {"url": url, "prefix": "/f",
                        "breaker": {"consecutive_failures": 3, "open_for": "60s", "jitter": 0}}}
    state = {"backend": "redis", "redis_url": redis_url, "key_prefix": f"rp-{name}:"}
    replicas = []
    for replica in ("a", "b"):
        (tmp_path / replica).mkdir()
        sidecar = Sidecar(load_config(write_config(tmp_path / replica, upstreams, state=state)))
        await sidecar.start()
        replicas.append(sidecar)
    a, b = replicas
    try:
        async def scrape(sidecar: Sidecar) -> str:
            async with http.get(admin_url(sidecar) + "/metrics") as response:
                return await response.text()

        assert sample_value(await scrape(b), "resilience_proxy_breaker_state", upstream=name, route="default") == 0

        upstream.status = 500
        for _ in range(3):
            async with http.get(base_url(a) + "/f/x") as response:
                assert response.status == 500
        key = f"{name}/default"
        end = time.monotonic() + 2
        while b.breakers.view(key).state != State.OPEN:
            assert time.monotonic() < end, "replica b never heard of the opened breaker"
            await asyncio.sleep(0.01)

        # Both replicas live in this test process and share its registry: stop A, blank the gauge,
        # and only B's sampling of its own view can set it again.
        await a.close()
        replicas.remove(a)
        state_families().breaker_state.labels(name, "default").set(-1)
        text = await scrape(b)
        assert sample_value(text, "resilience_proxy_breaker_state", upstream=name, route="default") == 2
        assert upstream.hits == 3, "b never called the upstream"
        assert sample_value(text, "resilience_proxy_breaker_transitions_total", upstream=name,
                            route="default", **{"from": "closed", "to": "open"}) == 1, "emitted once, by a"
        assert sample_value(text, "resilience_proxy_state_backend_up") == 1
        assert [line for line in text.splitlines() if line.startswith("resilience_proxy_state_backend_errors_total")]
    finally:
        for sidecar in replicas:
            await sidecar.close()
