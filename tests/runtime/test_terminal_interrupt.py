"""``--workers N`` from a terminal: Ctrl-C drains like SIGTERM does, and a killed supervisor leaves no worker.

Ctrl-C reaches every process of the terminal's foreground group at once. Real subprocesses: the
supervisor leads its own group (as a shell starts it) and the test sends SIGINT to that group.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from aiohttp import web

from tests.processes import SidecarProcess
from tests.runtime.test_second_signal import poll_log


@pytest.fixture
async def held_upstream(aiohttp_server) -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:  # type: ignore[no-untyped-def]
    """``/slow`` answers once the test sets ``release``; ``reached`` says a request got there."""
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        reached.set()
        await release.wait()
        return web.Response(text="drained")

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    server = await aiohttp_server(app)
    yield f"http://127.0.0.1:{server.port}", reached, release
    release.set()


def workers_of(sidecar: SidecarProcess) -> list[psutil.Process]:
    return [child for child in psutil.Process(sidecar.process.pid).children()
            if "spawn_main" in " ".join(child.cmdline())]


async def test_ctrl_c_in_a_terminal_drains_the_requests_in_flight(
    tmp_path: Path, held_upstream  # type: ignore[no-untyped-def]
) -> None:
    url, reached, release = held_upstream
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, "--workers", "2",
                             own_group=True, shutdown_grace="30s", log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        await poll_log(sidecar, '"msg":"serving"', 2)
        async with aiohttp.ClientSession() as http:
            in_flight = asyncio.create_task(http.get(sidecar.url + "/api/slow"))
            await asyncio.wait_for(reached.wait(), 15)
            sidecar.interrupt_from_terminal()
            await poll_log(sidecar, '"msg":"draining"', 2)
            await asyncio.sleep(0.3)  # a second SIGINT, were it coming, would have cut the drain by now
            assert sidecar.process.poll() is None, f"the drain was cut short:\n{sidecar.log}"
            release.set()
            response = await asyncio.wait_for(in_flight, 10)
            assert (response.status, await response.text()) == (200, "drained")
        assert await sidecar.wait_exit(timeout=15) == 0
        assert "second SIGINT" not in sidecar.log
    finally:
        sidecar.stop()


async def test_a_killed_supervisor_leaves_no_worker_holding_the_port(tmp_path: Path) -> None:
    sidecar = SidecarProcess(tmp_path, {"api": {"url": "http://127.0.0.1:9", "prefix": "/api"}}, "--workers", "2",
                             own_group=True, log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        await poll_log(sidecar, '"msg":"serving"', 2)
        workers = workers_of(sidecar)
        assert len(workers) == 2
        sidecar.process.send_signal(signal.SIGKILL)
        sidecar.process.wait(10)
        end = time.monotonic() + 15
        while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
            assert time.monotonic() < end, "workers outlived their supervisor"
            await asyncio.sleep(0.05)
    finally:
        for worker in workers_of(sidecar) if sidecar.process.poll() is None else []:
            worker.kill()
        sidecar.stop()
