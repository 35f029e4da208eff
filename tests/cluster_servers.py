"""A throwaway Redis Cluster on loopback: three masters, each with one replica.

Built with plain cluster commands (``CLUSTER MEET``, ``ADDSLOTS``, ``REPLICATE``) rather than
``redis-cli --cluster create``, so it needs nothing beyond ``redis-server`` and works with the
Redis 6.2 Debian ships. ``cluster-node-timeout`` is short (1 s) so a killed master's replica is
promoted within a few seconds. :meth:`ClusterSet.start` returns once every node reports
``cluster_state:ok`` and every replica is in sync, so a failover test starts from a whole cluster.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

import redis

from tests.redis_server import RedisServer

SLOTS = 16384
MASTERS = 3
NODE_TIMEOUT_MS = 1000
BUS_OFFSET = 10000
"""A cluster node also listens on its port + 10000 (the cluster bus), so ports stay below 55536."""


def cluster_port() -> int:
    """A free loopback port whose bus port (+10000) is free too; outside the kernel's ephemeral range."""
    for _ in range(200):
        port = random.randint(20000, 30000)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + BUS_OFFSET))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class ClusterSet:
    def __init__(self, directory: Path, masters: int = MASTERS, replicas: bool = True,
                 password: str | None = None) -> None:
        self.directory = directory
        self.nodes: list[RedisServer] = []
        self.masters_count = masters
        self.with_replicas = replicas
        for index in range(masters * (2 if replicas else 1)):
            node_dir = directory / f"node-{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            node = RedisServer(node_dir, port=cluster_port())
            _cluster_options(node)
            node.password = password
            self.nodes.append(node)

    def url(self, password: str = "", seeds: int = 2) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:seeds])
        return f"redis+cluster://{':' + password + '@' if password else ''}{hosts}"

    def start(self, deadline: float = 30.0) -> None:
        for node in self.nodes:
            _start_on_a_free_port(node)
        masters = self.nodes[:self.masters_count]
        first = masters[0].client()
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        per_master = SLOTS // self.masters_count
        for index, node in enumerate(masters):
            end = SLOTS if index == self.masters_count - 1 else (index + 1) * per_master
            with node.client() as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(index * per_master, end))
        self._wait(lambda: all(len(self._known(node)) == len(self.nodes) for node in self.nodes),
                   deadline, "nodes did not meet")
        if self.with_replicas:
            for master, replica in zip(masters, self.nodes[self.masters_count:]):
                master_id = self.node_id(master)
                self._wait(lambda r=replica, m=master_id: self._replicate(r, m), deadline, "replicate refused")
        self.wait_until_ok(deadline)

    def wait_until_ok(self, deadline: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and each live master's replica is in sync."""
        self._wait(self._ok, deadline, "cluster not ok")

    def master_nodes(self) -> list[RedisServer]:
        """The live nodes that are masters now (after a failover, a former replica is among them)."""
        return [node for node in self._live() if self._role(node) == "master"]

    def master_for_key(self, key: str) -> RedisServer:
        """The live master that serves ``key``'s slot now."""
        for node in self._live():
            with node.client() as client:
                slot = int(client.execute_command("CLUSTER KEYSLOT", key))
                for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no live node serves {key!r}")

    def replica_of(self, master: RedisServer) -> RedisServer:
        master_id = self.node_id(master)
        for node in self._live():
            for address, fields in self._nodes_table(node).items():
                if fields["master_id"] == master_id and "slave" in fields["flags"]:
                    port = int(address.rsplit(":", 1)[1].split("@")[0])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no replica of {master.port}")

    def kill_and_wait_for_promotion(self, master: RedisServer, deadline: float = 30.0) -> RedisServer:
        """SIGKILL ``master``; return its replica once that replica is a master and the cluster is ok."""
        replica = self.replica_of(master)
        master.kill()
        self._wait(lambda: self._role(replica) == "master", deadline, f"replica {replica.port} not promoted")
        self._wait(lambda: all(self._state(node) == "ok" for node in self._live()), deadline,
                   "cluster not ok after the failover")
        return replica

    def manual_failover(self, master: RedisServer, deadline: float = 30.0) -> RedisServer:
        """``CLUSTER FAILOVER`` on ``master``'s replica: the two swap roles (the old master answers MOVED
        from then on); returns the new master once the cluster is ok."""
        replica = self.replica_of(master)
        with replica.client() as client:
            client.execute_command("CLUSTER FAILOVER")
        self._wait(lambda: self._role(replica) == "master" and self._role(master) == "slave", deadline,
                   f"replica {replica.port} did not take over")
        self.wait_until_ok(deadline)
        return replica

    def node_id(self, node: RedisServer) -> str:
        with node.client() as client:
            return str(client.execute_command("CLUSTER MYID"))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _live(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def _known(self, node: RedisServer) -> dict[str, dict]:  # type: ignore[type-arg]
        return self._nodes_table(node)

    @staticmethod
    def _nodes_table(node: RedisServer) -> dict[str, dict]:  # type: ignore[type-arg]
        """``CLUSTER NODES`` as redis-py parses it: address -> node_id, flags, master_id, ..."""
        with node.client() as client:
            return dict(client.execute_command("CLUSTER NODES"))

    def _replicate(self, replica: RedisServer, master_id: str) -> bool:
        try:
            with replica.client() as client:
                client.execute_command("CLUSTER REPLICATE", master_id)
            return True
        except redis.ResponseError:
            return False  # the replica has not heard of the master yet

    def _role(self, node: RedisServer) -> str:
        try:
            with node.client() as client:
                return str(client.info("replication")["role"])
        except redis.RedisError:
            return "down"

    def _state(self, node: RedisServer) -> str:
        try:
            with node.client() as client:
                return str(client.cluster("INFO")["cluster_state"])
        except redis.RedisError:
            return "down"

    def _ok(self) -> bool:
        live = self._live()
        if not all(self._state(node) == "ok" for node in live):
            return False
        for node in live:
            try:
                with node.client() as client:
                    info = client.info("replication")
            except redis.RedisError:
                return False
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        return True

    @staticmethod
    def _wait(condition, deadline: float, what: str) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + deadline
        while not condition():
            if time.monotonic() > end:
                raise RuntimeError(what)
            time.sleep(0.05)


def _cluster_options(node: RedisServer) -> None:
    node.extra = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{node.port}.conf",
                  "--cluster-node-timeout", str(NODE_TIMEOUT_MS))


def _start_on_a_free_port(node: RedisServer, attempts: int = 5) -> None:
    """Start ``node``; when its port or bus port was taken since it was picked (other tests run on
    this machine too), pick another pair and start again."""
    for attempt in range(attempts):
        try:
            node.start()
            return
        except RuntimeError as error:
            if "Address already in use" not in str(error) or attempt == attempts - 1:
                raise
        node.port = cluster_port()
        _cluster_options(node)
