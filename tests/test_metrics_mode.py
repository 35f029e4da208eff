"""Which prometheus-client mode a sidecar runs in: in memory for one process, files only for ``--workers N``.

An image or manifest may set ``PROMETHEUS_MULTIPROC_DIR`` (older ones did); one worker must still pay the
single-process price (a file-backed increment is several times slower), and ``--workers 2`` must still
sum its workers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.metrics_text import sample_value, samples
from tests.processes import SidecarProcess

IN_MEMORY_ONLY = "python_gc_objects_collected_total"
"""Collected by the default registry only: the multiprocess collector has no gc (or platform) metrics."""


async def metrics(sidecar: SidecarProcess) -> str:
    async with aiohttp.ClientSession() as http, http.get(sidecar.admin_url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


async def test_one_worker_ignores_an_inherited_multiprocess_dir(tmp_path: Path, scripted,  # type: ignore[no-untyped-def]
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = scripted
    metrics_dir = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}})
    try:
        await sidecar.wait_ready()
        async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/api/x") as response:
            assert response.status == 200
        text = await metrics(sidecar)
        assert samples(text, IN_MEMORY_ONLY), "the default in-memory registry answers /metrics"
        assert sample_value(text, "process_cpu_seconds_total") > 0
        assert sample_value(text, "resilience_proxy_requests_total", upstream="api", status_class="2xx") == 1
        assert not metrics_dir.exists(), "no file-backed metric values were written"
    finally:
        sidecar.stop()


async def test_two_workers_sum_in_a_fresh_dir_under_the_inherited_one(tmp_path: Path, scripted,  # type: ignore[no-untyped-def]
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = scripted
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_4242.db").write_bytes(b"")  # an earlier run's leftover: never read
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, "--workers", "2")
    try:
        await sidecar.wait_ready()
        for _ in range(6):  # a new connection each: the kernel spreads them over the workers
            async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/api/x") as response:
                assert response.status == 200
        (run_dir,) = [p for p in metrics_dir.iterdir() if p.is_dir()]
        assert run_dir.name.startswith("resilience-proxy-metrics-") and any(run_dir.glob("*.db"))
        for _ in range(4):  # whichever worker answers reports the total of both
            text = await metrics(sidecar)
            assert not samples(text, IN_MEMORY_ONLY), "multiprocess mode"
            assert sample_value(text, "resilience_proxy_requests_total", upstream="api", status_class="2xx") == 6
        sidecar.signal()
        assert await sidecar.wait_exit() == 0, sidecar.log
        deadline = time.monotonic() + 10
        while run_dir.exists():
            assert time.monotonic() < deadline, "the run's metrics dir was not removed"
            await asyncio.sleep(0.05)
        assert (metrics_dir / "counter_4242.db").exists()
    finally:
        sidecar.stop()


def test_workers_without_a_writable_metrics_dir_exit_with_a_clear_error(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(blocker / "metrics"))
    sidecar = SidecarProcess(tmp_path, {"api": {"url": "http://127.0.0.1:9"}}, "--workers", "2")
    try:
        deadline = time.monotonic() + 20
        while sidecar.process.poll() is None:
            assert time.monotonic() < deadline, sidecar.log
            time.sleep(0.05)
        assert sidecar.process.returncode == 1
        assert "cannot create the workers' metrics directory" in sidecar.log and "Traceback" not in sidecar.log
    finally:
        sidecar.stop()
