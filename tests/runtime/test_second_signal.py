"""Ctrl-C twice: a second SIGTERM/SIGINT during the drain ends the process at once, as Envoy and most servers do.

Real subprocesses, with a request in flight that would hold the drain for its whole grace (30 s).
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

GRACE = "30s"


@pytest.fixture
async def hanging_upstream(aiohttp_server) -> AsyncIterator[tuple[str, asyncio.Event]]:  # type: ignore[no-untyped-def]
    """``/slow`` answers only when the test ends; the event says a request reached it."""
    reached, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        reached.set()
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    server = await aiohttp_server(app)
    yield f"http://127.0.0.1:{server.port}", reached
    release.set()


async def poll_log(sidecar: SidecarProcess, text: str, count: int = 1, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while sidecar.log.count(text) < count:
        assert time.monotonic() < end, f"{text!r} not logged {count} time(s):\n{sidecar.log}"
        await asyncio.sleep(0.02)


async def interrupt_twice(sidecar: SidecarProcess, signum: int, reached: asyncio.Event, drains: int) -> float:
    """A request in flight, the first signal, the drain under way, the second signal: seconds until the exit."""
    async with aiohttp.ClientSession() as http:
        in_flight = asyncio.create_task(http.get(sidecar.url + "/api/slow"))
        try:
            await asyncio.wait_for(reached.wait(), 15)
            sidecar.signal(signum)
            await poll_log(sidecar, '"msg":"draining"', drains)
            await asyncio.sleep(0.2)
            assert sidecar.process.poll() is None, "the first signal drains: the request holds it for 30 s"
            sidecar.signal(signum)
            started = time.monotonic()
            assert await sidecar.wait_exit(timeout=10) == 128 + signum
            return time.monotonic() - started
        finally:
            in_flight.cancel()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_second_signal_during_the_drain_exits_at_once(
    tmp_path: Path, hanging_upstream, signum: int  # type: ignore[no-untyped-def]
) -> None:
    url, reached = hanging_upstream
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, shutdown_grace=GRACE,
                             log={"level": "info", "access": True})
    try:
        await sidecar.wait_ready()
        took = await interrupt_twice(sidecar, signum, reached, drains=1)
        assert took < 3.0, f"exit took {took:.1f}s"
        assert f"second {signal.Signals(signum).name} during the drain: exiting now" in sidecar.log
    finally:
        sidecar.stop()


async def test_a_second_sigint_to_the_supervisor_ends_every_worker_at_once(
    tmp_path: Path, hanging_upstream  # type: ignore[no-untyped-def]
) -> None:
    url, reached = hanging_upstream
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, "--workers", "2",
                             shutdown_grace=GRACE, log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        await poll_log(sidecar, '"msg":"serving"', 2)  # both workers handle signals
        workers = [child for child in psutil.Process(sidecar.process.pid).children()
                   if "spawn_main" in " ".join(child.cmdline())]
        assert len(workers) == 2
        took = await interrupt_twice(sidecar, signal.SIGINT, reached, drains=2)
        assert took < 5.0, f"exit took {took:.1f}s"
        assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], "workers left"
        assert "second SIGINT: workers exit now" in sidecar.log
    finally:
        sidecar.stop()
