"""A throwaway Sentinel setup on loopback: one master, one replica, three sentinels (quorum 2).

Sentinel timeouts are short (``down-after-milliseconds 1000``, ``failover-timeout 2000``) so a
failover test takes seconds. :meth:`SentinelSet.start` returns once every sentinel sees the
replica and the two other sentinels: before that ``SENTINEL FAILOVER`` is refused.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.conftest import free_port
from tests.redis_server import RedisServer, redis_server_binary

MASTER_NAME = "mymaster"
SENTINELS = 3


class SentinelSet:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master = RedisServer(directory)
        self.replica = RedisServer(directory, extra=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def url(self, password: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{':' + password + '@' if password else ''}{hosts}/{MASTER_NAME}/0"

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[index], socket_timeout=5,
                           decode_responses=True)

    def master_port(self) -> int:
        """The master's port as the first sentinel sees it now."""
        with self.sentinel() as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    def start(self, deadline: float = 20.0) -> None:
        self.master.start()
        self.replica.start()
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                            f"sentinel failover-timeout {MASTER_NAME} 2000\n")
            log = open(self.directory / f"sentinel-{port}.log", "ab")
            self.processes.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                                   stdout=log, stderr=subprocess.STDOUT))
            log.close()
        self.wait_until_ready(deadline)

    def wait_until_ready(self, deadline: float = 20.0) -> None:
        """Until every sentinel knows the replica (synced) and its two peers."""
        end = time.monotonic() + deadline
        while not all(self._ready(index) for index in range(SENTINELS)):
            if time.monotonic() > end:
                raise RuntimeError("sentinels not ready: " + ", ".join(
                    (self.directory / f"sentinel-{port}.log").read_text()[-500:] for port in self.sentinel_ports))
            time.sleep(0.05)

    def _ready(self, index: int) -> bool:
        try:
            with self.sentinel(index) as sentinel:
                state = sentinel.sentinel_master(MASTER_NAME)
                replicas = sentinel.sentinel_slaves(MASTER_NAME)
        except redis.RedisError:
            return False
        return (int(state["num-other-sentinels"]) == SENTINELS - 1
                and any(not r["is_sdown"] and int(r.get("master-link-down-time", 1)) == 0 for r in replicas))

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: the replica becomes master without waiting for agreement."""
        with self.sentinel() as sentinel:
            sentinel.execute_command("SENTINEL FAILOVER", MASTER_NAME)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.replica.stop()
        self.master.stop()


@contextmanager
def running(directory: Path) -> Iterator[SentinelSet]:
    """A started set, stopped on the way out (also when it failed to start): a module fixture's body."""
    servers = SentinelSet(directory)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()
