"""``--workers 2`` as a real subprocess: whichever worker answers ``/metrics`` reports both workers' totals."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import psutil

from tests.metrics_text import assert_promtool_accepts, sample_value, samples
from tests.processes import SidecarProcess


async def test_two_workers_report_aggregated_counts_gauges_and_process_metrics(tmp_path: Path, scripted) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api", "breaker": {"consecutive_failures": 1000}}},
                             "--workers", "2", log={"level": "info", "access": True})
    try:
        await sidecar.wait_ready()

        async def get() -> int:
            # A new connection each time, so that the kernel spreads them over the workers.
            async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/api/x") as response:
                await response.read()
                return response.status

        def serving_pids() -> set[int]:
            return {json.loads(line)["pid"] for line in sidecar.log.splitlines() if '"msg":"request"' in line}

        ok = 0
        end = time.monotonic() + 20
        while len(serving_pids()) < 2:  # the second worker may still be starting when the first is ready
            assert time.monotonic() < end, "only one worker ever served"
            for _ in range(5):
                assert await get() == 200
                ok += 1
            await asyncio.sleep(0.1)  # access lines are written in batches
        upstream.status = 500
        for _ in range(5):
            assert await get() == 500

        workers = [p for p in psutil.Process(sidecar.process.pid).children()
                   if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2
        rss = sum(p.memory_info().rss for p in workers)
        for _ in range(4):  # new connections: different workers answer, all report the same totals
            async with aiohttp.ClientSession() as http, http.get(sidecar.admin_url + "/metrics") as response:
                text = await response.text()
            assert sample_value(text, "resilience_proxy_requests_total", upstream="api", route="default",
                                method="GET", status_class="2xx") == ok
            assert sample_value(text, "resilience_proxy_requests_total", upstream="api", status_class="5xx") == 5
            assert sample_value(text, "resilience_proxy_request_duration_seconds_count", upstream="api") == ok + 5
            assert sample_value(text, "resilience_proxy_upstream_attempts_total", upstream="api") == ok + 5
            assert samples(text, "resilience_proxy_breaker_state") == [({"upstream": "api", "route": "default"}, 0)]
            assert samples(text, "resilience_proxy_state_backend_up") == [({}, 1)]
            assert samples(text, "resilience_proxy_in_flight_requests") == [({}, 0)]
            assert 0.7 * rss < sample_value(text, "process_resident_memory_bytes") < 1.3 * rss, \
                "process metrics add up the workers"

        sidecar.signal(signal.SIGTERM)
        assert await sidecar.wait_exit() == 0
        assert_promtool_accepts(text)  # the multiprocess exposition (last, as it skips without promtool)
    finally:
        sidecar.stop()
