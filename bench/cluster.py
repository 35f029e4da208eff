"""The fleet bench's own Redis Cluster: three masters on loopback, no replicas, built with cluster commands.

No replicas: the bench counts the commands the sidecars cause (``INFO commandstats`` on every
node), and a replica would count its master's writes a second time. Built with ``CLUSTER MEET``
and ``ADDSLOTS`` over raw RESP (bench/redisstats.py) rather than ``redis-cli --cluster create``, so
it needs only ``redis-server`` (6.2 has no ADDSLOTSRANGE: one ADDSLOTS with every slot number).
"""

from __future__ import annotations

import time
from pathlib import Path

import procs
import redisstats

SLOTS = 16384
BUS_OFFSET = 10000
"""Every cluster node also listens on its port + 10000 (the cluster bus)."""


def node_command(redis_server: str, port: int, directory: Path) -> list[str]:
    """One cluster-enabled redis-server on 127.0.0.1:port, nothing persisted, its nodes file in ``directory``."""
    return [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--cluster-enabled", "yes", "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
            "--cluster-node-timeout", "2000"]


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The inclusive slot range of each master, as even as 16384 allows (the last takes the rest)."""
    per = SLOTS // masters
    return [(i * per, SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1) for i in range(masters)]


def info_field(port: int, section: str, name: str) -> str:
    """One ``name:value`` field of ``INFO section`` (or ``CLUSTER INFO`` with section ``cluster-info``)."""
    args = ("CLUSTER", "INFO") if section == "cluster-info" else ("INFO", section)
    for line in redisstats.command(port, *args).decode().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def form(ports: list[int], deadline: float = 30.0) -> None:
    """Join the started nodes into one cluster, each serving an even share of the slots; return once
    every node says ``cluster_state:ok`` (raises RuntimeError after ``deadline`` seconds)."""
    for port in ports[1:]:
        redisstats.command(ports[0], "CLUSTER", "MEET", "127.0.0.1", str(port))
    for port, (start, end) in zip(ports, slot_ranges(len(ports))):
        redisstats.command(port, "CLUSTER", "ADDSLOTS", *(str(slot) for slot in range(start, end + 1)))
    end_at = time.monotonic() + deadline
    while not all(info_field(port, "cluster-info", "cluster_state") == "ok"
                  and info_field(port, "cluster-info", "cluster_known_nodes") == str(len(ports)) for port in ports):
        if time.monotonic() > end_at:
            states = {port: info_field(port, "cluster-info", "cluster_state") for port in ports}
            raise RuntimeError(f"the bench's cluster did not become ok in {deadline:g} s: {states}")
        time.sleep(0.1)


def start(redis_server: str, ports: list[int], cpu: int, tmp: Path, services: list[procs.Service]) -> None:
    """Start one node per port (pinned to ``cpu``, added to ``services`` so the caller stops them) and form
    the cluster."""
    for port in ports:
        directory = tmp / f"cluster-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        services.append(procs.start(f"redis-{port}", node_command(redis_server, port, directory), cpu, tmp,
                                    cwd=directory))
        procs.wait_redis(services[-1], port)
    form(ports)
