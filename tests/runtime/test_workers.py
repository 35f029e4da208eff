"""``run --workers N`` as a real subprocess: workers that can never start make it exit, with backoff between tries."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

from tests.conftest import free_port
from tests.processes import SidecarProcess


async def test_workers_that_cannot_bind_back_off_then_the_supervisor_exits_non_zero(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()  # another program holds the data port (without SO_REUSEPORT: nobody can share it)
    port = taken.getsockname()[1]
    sidecar = SidecarProcess(tmp_path, {"api": {"url": "http://127.0.0.1:9", "prefix": "/api"}}, "--workers", "2",
                             listen=f"127.0.0.1:{port}", admin={"listen": f"127.0.0.1:{free_port()}"},
                             log={"level": "info", "access": False})
    try:
        assert await sidecar.wait_exit(timeout=90) == 1
        log = sidecar.log
        assert "worker died before it became ready 5 times in a row; stopping" in log
        delays = [float(d) for d in re.findall(r"worker exited; replacing it in ([\d.]+)s", log)]
        assert sorted(set(delays)) == [0.5, 1.0, 2.0, 4.0], delays
        assert len(delays) <= 2 * 4, "no worker slot went past its fifth failed start"
    finally:
        sidecar.stop()
        taken.close()


async def test_a_stop_that_reaches_workers_still_starting_is_a_clean_exit(tmp_path: Path) -> None:
    """SIGTERM right after start: the workers, still importing, end by the forwarded signal with nothing to
    drain; that is the stop asked for, not a failure (it made `--workers 2` exit 1 now and then)."""
    sidecar = SidecarProcess(tmp_path, {"api": {"url": "http://127.0.0.1:9", "prefix": "/api"}}, "--workers", "2",
                             log={"level": "info", "access": False})
    try:
        deadline = time.monotonic() + 20
        while "workers started" not in sidecar.log:  # the supervisor has spawned them; they are not serving yet
            assert time.monotonic() < deadline, sidecar.log
            await asyncio.sleep(0.01)
        sidecar.signal()
        assert await sidecar.wait_exit() == 0, sidecar.log
    finally:
        sidecar.stop()
