"""``run --workers N`` as a real subprocess: workers that can never start make it exit, with backoff between tries."""

from __future__ import annotations

import re
import socket
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
