"""Process-level behaviour with real subprocesses: graceful drain, workers, SIGHUP reload, streaming memory."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import psutil
import pytest
import yaml
from aiohttp import web

from tests.metrics_text import sample_value
from tests.processes import SidecarProcess


async def poll_until(probe, expected, deadline: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``probe()`` until it returns ``expected``; the signal reaches the sidecar asynchronously."""
    end = time.monotonic() + deadline
    while (value := await probe()) != expected:
        assert time.monotonic() < end, f"still {value!r} after {deadline}s, wanted {expected!r}"
        await asyncio.sleep(0.02)


async def readyz_status(http: aiohttp.ClientSession, sidecar: SidecarProcess) -> int:
    async with http.get(sidecar.admin_url + "/readyz") as response:
        return response.status


async def new_connection_refused(sidecar: SidecarProcess) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


@pytest.fixture
async def slow_upstream(aiohttp_server):  # type: ignore[no-untyped-def]
    """``/slow`` answers after 1.5 s (and says when it started); anything else answers at once."""
    started = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/slow"):
            started.set()
            await asyncio.sleep(1.5)
            return web.Response(body=b"s" * 200_000)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    server.slow_started = started
    return server


async def test_sigterm_drains_in_flight_requests_then_exits_zero(tmp_path: Path, slow_upstream) -> None:  # type: ignore[no-untyped-def]
    sidecar = SidecarProcess(tmp_path, {"api": {"url": f"http://127.0.0.1:{slow_upstream.port}", "prefix": "/api"}},
                             shutdown_grace="10s", log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        async with aiohttp.ClientSession() as http:
            in_flight = asyncio.create_task(http.get(sidecar.url + "/api/slow"))
            await asyncio.wait_for(slow_upstream.slow_started.wait(), 10)
            sidecar.signal(signal.SIGTERM)

            await poll_until(lambda: readyz_status(http, sidecar) , 503)
            await poll_until(lambda: new_connection_refused(sidecar), True)

            response = await in_flight
            assert response.status == 200
            assert await response.read() == b"s" * 200_000
        assert await sidecar.wait_exit() == 0
        assert '"msg":"drained"' in sidecar.log
    finally:
        sidecar.stop()


async def test_sigint_with_nothing_in_flight_exits_at_once(tmp_path: Path, slow_upstream) -> None:  # type: ignore[no-untyped-def]
    sidecar = SidecarProcess(tmp_path, {"api": {"url": f"http://127.0.0.1:{slow_upstream.port}", "prefix": "/api"}})
    try:
        await sidecar.wait_ready()
        started = time.monotonic()
        sidecar.signal(signal.SIGINT)
        assert await sidecar.wait_exit() == 0
        assert time.monotonic() - started < 5
    finally:
        sidecar.stop()


async def test_two_workers_share_the_port_and_metrics_add_up(tmp_path: Path, slow_upstream) -> None:  # type: ignore[no-untyped-def]
    sidecar = SidecarProcess(tmp_path, {"api": {"url": f"http://127.0.0.1:{slow_upstream.port}", "prefix": "/api"}},
                             "--workers", "2", log={"level": "info", "access": True})
    try:
        await sidecar.wait_ready()

        def access_lines() -> list[dict]:
            return [json.loads(line) for line in sidecar.log.splitlines() if '"msg":"request"' in line]

        # A new connection each time, so the kernel spreads them over both workers; /readyz answered
        # by one worker does not mean the other has bound yet, so send until both have served.
        requests, deadline = 0, time.monotonic() + 15
        while requests < 60 or len({line["pid"] for line in access_lines()}) < 2:
            assert time.monotonic() < deadline and requests < 1000, "both workers must serve"
            async with aiohttp.ClientSession() as http:
                async with http.get(sidecar.url + "/api/fast") as response:
                    assert response.status == 200
            requests += 1
            if requests >= 60:
                await asyncio.sleep(0.06)  # access lines are written in 50 ms batches
        await poll_until(lambda: asyncio.sleep(0, len(access_lines())), requests)

        for _ in range(4):  # whichever worker answers the scrape reports the total of both
            async with aiohttp.ClientSession() as http:
                async with http.get(sidecar.admin_url + "/metrics") as response:
                    text = await response.text()
            assert sample_value(text, "resilience_proxy_requests_total", upstream="api", status_class="2xx") == requests

        sidecar.signal(signal.SIGTERM)
        assert await sidecar.wait_exit() == 0
    finally:
        sidecar.stop()


async def test_a_100_mb_response_streams_through_in_little_memory(tmp_path: Path, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    chunk = b"\x00" * 65536
    total = 100 * 2**20

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = total
        await response.prepare(request)
        for _ in range(total // len(chunk)):
            await response.write(chunk)
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", big)
    upstream = await aiohttp_server(app)
    sidecar = SidecarProcess(tmp_path, {"files": {"url": f"http://127.0.0.1:{upstream.port}", "prefix": "/files"}})
    try:
        await sidecar.wait_ready()
        process = psutil.Process(sidecar.process.pid)
        async with aiohttp.ClientSession() as http:
            async with http.get(sidecar.url + "/files/warmup") as response:  # pay for imports and buffers once
                await response.content.readexactly(1024)
            baseline = process.memory_info().rss
            peak, received = baseline, 0
            async with http.get(sidecar.url + "/files/big.bin") as response:
                async for piece in response.content.iter_chunked(2**20):
                    received += len(piece)
                    peak = max(peak, process.memory_info().rss)
                    await asyncio.sleep(0.001)  # a slowish client: back-pressure must hold data upstream
        assert received == total
        assert peak - baseline < 30 * 2**20, f"sidecar grew by {(peak - baseline) / 2**20:.1f} MiB"
    finally:
        sidecar.stop()


def _add_upstream(sidecar: SidecarProcess, name: str, url: str) -> None:
    """Rewrite the sidecar's policy file with one more upstream."""
    policy = sidecar.config.parent / "policies" / "test.yaml"
    upstreams = yaml.safe_load(policy.read_text())["upstreams"]
    upstreams[name] = {"url": url, "prefix": f"/{name}", "retry": False}
    policy.write_text(yaml.safe_dump({"upstreams": upstreams}))


async def both_workers_serve(sidecar: SidecarProcess, deadline: float = 15.0) -> None:
    """Until two pids answered /admin/config: each then handles SIGHUP (installed before it listens)."""
    pids: set[int] = set()
    end = time.monotonic() + deadline
    while len(pids) < 2:
        assert time.monotonic() < end, f"only {pids} answered"
        async with aiohttp.ClientSession() as http:  # a new connection: the kernel picks a worker
            async with http.get(sidecar.admin_url + "/admin/config") as response:
                pids.add((await response.json())["pid"])


async def _status(url: str) -> int:
    async with aiohttp.ClientSession() as http:  # a new connection each time (workers: any of them)
        async with http.get(url) as response:
            return response.status


async def test_sighup_reloads_the_config(tmp_path: Path, slow_upstream) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{slow_upstream.port}"
    # Without file watching, so that only the signal can be what reloads.
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, "--watch-interval", "0",
                             log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        assert await _status(sidecar.url + "/new/x") == 404
        _add_upstream(sidecar, "new", url)
        await asyncio.sleep(1.0)
        assert await _status(sidecar.url + "/new/x") == 404  # not watching: nothing yet
        sidecar.signal(signal.SIGHUP)
        await poll_until(lambda: _status(sidecar.url + "/new/x"), 200)
        async with aiohttp.ClientSession() as http:
            async with http.get(sidecar.admin_url + "/admin/config") as response:
                assert (await response.json())["last_reload"]["trigger"] == "signal"
        sidecar.signal(signal.SIGTERM)
        assert await sidecar.wait_exit() == 0
        assert '"msg":"config reloaded"' in sidecar.log
    finally:
        sidecar.stop()


async def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path, slow_upstream) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{slow_upstream.port}"
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, "--workers", "2",
                             "--watch-interval", "0", log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        await both_workers_serve(sidecar)
        _add_upstream(sidecar, "new", url)
        sidecar.signal(signal.SIGHUP)

        def reloaded_pids() -> set[int]:
            return {json.loads(line)["pid"] for line in sidecar.log.splitlines() if '"msg":"config reloaded"' in line}

        await poll_until(lambda: asyncio.sleep(0, len(reloaded_pids())), 2, deadline=10)
        assert all([await _status(sidecar.url + "/new/x") == 200 for _ in range(20)])
        sidecar.signal(signal.SIGTERM)
        assert await sidecar.wait_exit() == 0
    finally:
        sidecar.stop()


async def test_sighup_while_draining_neither_reloads_nor_kills(tmp_path: Path, slow_upstream) -> None:  # type: ignore[no-untyped-def]
    sidecar = SidecarProcess(tmp_path, {"api": {"url": f"http://127.0.0.1:{slow_upstream.port}", "prefix": "/api"}},
                             shutdown_grace="10s", log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        async with aiohttp.ClientSession() as http:
            in_flight = asyncio.create_task(http.get(sidecar.url + "/api/slow"))
            await asyncio.wait_for(slow_upstream.slow_started.wait(), 10)
            sidecar.signal(signal.SIGTERM)
            await poll_until(lambda: readyz_status(http, sidecar), 503)
            sidecar.signal(signal.SIGHUP)
            response = await in_flight
            assert response.status == 200
        assert await sidecar.wait_exit() == 0
        assert "SIGHUP ignored: draining" in sidecar.log
    finally:
        sidecar.stop()


async def test_an_admin_reload_on_one_worker_reloads_them_all(tmp_path: Path, slow_upstream) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{slow_upstream.port}"
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, "--workers", "2",
                             "--watch-interval", "0", admin_token="t0ken", log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        await both_workers_serve(sidecar)
        _add_upstream(sidecar, "new", url)
        async with aiohttp.ClientSession() as http:
            async with http.post(sidecar.admin_url + "/admin/reload",
                                 headers={"Authorization": "Bearer t0ken"}) as response:
                assert response.status == 200

        def reloads() -> list[int]:
            return [json.loads(line)["pid"] for line in sidecar.log.splitlines() if '"msg":"config reloaded"' in line]

        await poll_until(lambda: asyncio.sleep(0, len(set(reloads()))), 2, deadline=10)
        await asyncio.sleep(0.5)
        assert len(reloads()) == 2  # the worker that answered found its files unchanged the second time
        assert all([await _status(sidecar.url + "/new/x") == 200 for _ in range(20)])
        sidecar.signal(signal.SIGTERM)
        assert await sidecar.wait_exit() == 0
    finally:
        sidecar.stop()
