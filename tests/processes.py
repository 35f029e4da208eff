"""Sidecars as real subprocesses, for signals, workers and memory measurements."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port, write_config


class SidecarProcess:
    """``python -m proxy run`` on free loopback ports, stderr kept in a file for assertions."""

    def __init__(self, directory: Path, upstreams: dict[str, dict[str, Any]], *args: str,
                 admin_token: str | None = None, config: tuple[Path, int, int] | None = None,
                 python: Sequence[str] = (), env: Mapping[str, str] | None = None, own_group: bool = False,
                 **settings: Any) -> None:
        """``config``: a config file written by the test and the data and admin ports it names,
        instead of one written here from ``upstreams`` and ``settings``. ``python``: interpreter options
        (``-X importtime``); ``env``: the environment (default: this process's). ``own_group``: the sidecar
        leads a process group of its own, as a command started from a terminal does (for Ctrl-C)."""
        if config is not None:
            self.config, self.port, self.admin_port = config
        else:
            self.port, self.admin_port = free_port(), free_port()
            settings.setdefault("listen", f"127.0.0.1:{self.port}")
            admin = {"listen": f"127.0.0.1:{self.admin_port}"}
            if admin_token:
                admin["token"] = admin_token
            settings.setdefault("admin", admin)
            self.config = write_config(directory, upstreams, **settings)
        self.log_path = directory / "sidecar.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, *python, "-m", "proxy", "run", "--config", str(self.config), *args],
            stdout=self._log, stderr=subprocess.STDOUT, env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
            start_new_session=own_group,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    async def wait_ready(self, deadline: float = 20.0) -> None:
        """Poll /readyz until 200; fail with the sidecar's output if it dies or never gets there."""
        end = time.monotonic() + deadline
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                if self.process.poll() is not None:
                    raise AssertionError(f"sidecar exited with {self.process.returncode}:\n{self.log}")
                try:
                    async with http.get(self.admin_url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"sidecar not ready in {deadline}s:\n{self.log}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def interrupt_from_terminal(self) -> None:
        """Ctrl-C: SIGINT to the whole foreground process group (needs ``own_group``)."""
        os.killpg(self.process.pid, signal.SIGINT)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        end = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if self.process.poll() is None:
            raise AssertionError(f"sidecar still running after {timeout}s:\n{self.log}")
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


async def start_on_any_ports(directory: Path, config: Path, deadline: float = 60.0) -> tuple[SidecarProcess, int | None]:
    """Start a sidecar whose ``config`` listens on port 0 (``listen``, ``admin.listen``, and ``webhooks.listen``
    if any) with ``log.level: info``, and learn the ports it bound from its log: unlike ports chosen beforehand
    (free_port), nothing else on the machine can take them in between. Returns it ready, and the webhooks port."""
    sidecar = SidecarProcess(directory, {}, config=(config, 0, 0))
    try:
        webhooks = await _bound_ports(sidecar, time.monotonic() + deadline)
        await sidecar.wait_ready(deadline)
    except BaseException:
        sidecar.stop()
        raise
    return sidecar, webhooks


async def _bound_ports(sidecar: SidecarProcess, end: float) -> int | None:
    """Set the sidecar's ports from its 'serving' log line; the webhooks port if it logged one."""
    webhooks: int | None = None
    while not sidecar.port:
        if sidecar.process.poll() is not None:
            raise AssertionError(f"sidecar exited with {sidecar.process.returncode}:\n{sidecar.log}")
        if time.monotonic() > end:
            raise AssertionError(f"no 'serving' log line in time (log.level info?):\n{sidecar.log}")
        for line in sidecar.log.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # another kind of line, or one still being written
                continue
            if entry.get("msg") == "webhooks listening":
                webhooks = int(entry["webhooks"].rsplit(":", 1)[1])
            elif entry.get("msg") == "serving":
                sidecar.port = int(entry["listen"].rsplit(":", 1)[1])
                sidecar.admin_port = int(entry["admin"].rsplit(":", 1)[1])
        await asyncio.sleep(0.05)
    return webhooks
