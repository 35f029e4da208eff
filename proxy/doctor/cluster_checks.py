"""The doctor's rows for ``redis+cluster://``: is the cluster whole, seen from every configured seed.

Each seed is asked on its own, with a plain client (``CLUSTER INFO``, ``MYID``, ``SLOTS``, ``NODES``),
so the report says what each node believes rather than what a cluster client makes of it:

- ``cluster``: N masters and their replicas, slots served (16384/16384), ``cluster_state``, seeds
  answering. FAIL when the cluster is not whole: a slot no master serves (as any seed sees it),
  ``cluster_state`` not ok, a seed that answers but is not a node of this cluster (a single server,
  or a node never joined), or no seed answering. WARN when some seeds do not answer, or some node
  is failing, but the cluster serves every slot.
- ``redis``: PING to every master that serves slots, the slowest shown.
- ``lua scripts``: SCRIPT LOAD on every such master (EVALSHA runs on the master of its key's slot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from proxy.config.model import StateSettings
from proxy.config.redis_url import cluster_target
from proxy.doctor.network import CHECK_TIMEOUT, describe_failure
from proxy.doctor.redis_checks import load_scripts, node_client, ping_ms, timed
from proxy.doctor.report import FAIL, PASS, SKIP, WARN, Result
from proxy.state.base import BackendUnavailable
from proxy.state.redis.client import close_quietly, translated

SLOTS = 16384

Address = tuple[str, int]


@dataclass
class SeedView:
    """What one seed says about the cluster; ``error`` when it said nothing usable."""

    seed: Address
    error: str = ""
    not_cluster: bool = False
    myid: str = ""
    state: str = ""
    masters: dict[Address, list[tuple[int, int]]] = field(default_factory=dict)
    """Every master serving slots, by address, with its slot ranges (``CLUSTER SLOTS``)."""
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``CLUSTER NODES`` as redis-py parses it: ``host:port`` -> node_id, flags, master_id, ..."""

    @property
    def shown(self) -> str:
        return f"{self.seed[0]}:{self.seed[1]}"

    @property
    def node_ids(self) -> set[str]:
        return {fields["node_id"] for fields in self.nodes.values()}


def uncovered(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The slot ranges (inclusive) of 0..16383 that none of ``ranges`` covers."""
    gaps, next_free = [], 0
    for start, end in sorted(ranges):
        if start > next_free:
            gaps.append((next_free, start - 1))
        next_free = max(next_free, end + 1)
    if next_free < SLOTS:
        gaps.append((next_free, SLOTS - 1))
    return gaps


def spans(ranges: Iterable[tuple[int, int]], most: int = 4) -> str:
    """``0-99, 200, 300-400`` (at most ``most`` ranges, then ``and N more``)."""
    ranges = list(ranges)
    shown = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges[:most])
    return shown + (f" and {len(ranges) - most} more" if len(ranges) > most else "")


def slot_count(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(end - start + 1 for start, end in ranges)


async def _ask(seed: Address, username: str | None, password: str | None) -> SeedView:
    view = SeedView(seed)
    client = node_client(*seed, username, password)
    try:
        with translated():
            async with asyncio.timeout(CHECK_TIMEOUT):
                info = await client.execute_command("CLUSTER INFO")
                view.myid = str(await client.execute_command("CLUSTER MYID"))
                slots = await client.execute_command("CLUSTER SLOTS")
                view.nodes = dict(await client.execute_command("CLUSTER NODES"))
    except BackendUnavailable as error:
        view.not_cluster = isinstance(error.__cause__, ResponseError) and "cluster support disabled" in str(error)
        view.error = describe_failure(error)
        return view
    finally:
        await close_quietly(client.aclose)
    view.state = str(info.get("cluster_state", "?"))
    for start, end, primary, *_ in slots:
        view.masters.setdefault((str(primary[0]), int(primary[1])), []).append((int(start), int(end)))
    return view


def _judge(views: list[SeedView]) -> tuple[Result, SeedView | None]:
    """The ``cluster`` row, and the view the other rows use (the seed that knows the most nodes)."""
    answering = [v for v in views if not v.error]
    silent = [f"{v.shown} ({v.error})" for v in views if v.error and not v.not_cluster]
    heard = f"{len(answering)} of {len(views)} seeds answer"
    problems = [f"{v.shown} is not a cluster node (cluster support disabled: a single server takes redis://)"
                for v in views if v.not_cluster]
    if not answering:
        problems.append(f"no seed answers: {'; '.join(silent)}" if silent else "no seed answers")
        return Result("cluster", FAIL, "; ".join(problems)), None
    widest = max(answering, key=lambda v: len(v.nodes))
    members = [view for view in answering if view.myid in widest.node_ids]
    for view in answering:
        if view not in members:
            problems.append(f"{view.shown} is not in the cluster {widest.shown} belongs to "
                            f"(it knows {len(view.nodes)} node{'s' if len(view.nodes) != 1 else ''})")
    missing: set[tuple[int, int]] = set()
    for view in members:
        missing.update(uncovered(r for ranges in view.masters.values() for r in ranges))
    gaps = _merged(sorted(missing))
    if gaps:
        problems.append(f"slots {spans(gaps)} not served by any master")
    failing_state = [f"{v.shown}" for v in members if v.state != "ok"]
    if failing_state:
        problems.append(f"cluster_state fail on {', '.join(failing_state)}")
    served = SLOTS - slot_count(gaps)
    flags = {address: set(fields["flags"].split(",")) for address, fields in widest.nodes.items()}
    masters = len(widest.masters)
    # "fail" is the cluster's verdict (a majority of masters agreed); "fail?" one node's suspicion, which a
    # busy machine raises and clears within a node timeout: not worth a warning.
    replicas = sum(1 for f in flags.values() if "slave" in f and "fail" not in f)
    down = [address for address, f in flags.items() if "fail" in f]
    summary = (f"{masters} master{'s' if masters != 1 else ''}, {replicas} replica{'s' if replicas != 1 else ''}, "
               f"{served}/{SLOTS} slots, cluster_state {widest.state}; {heard}")
    if problems:
        return Result("cluster", FAIL, "; ".join([*problems, summary])), widest
    notes = ([f"not answering: {'; '.join(silent)}"] if silent else []) + \
            ([f"failing: {', '.join(sorted(down))}"] if down else [])
    return Result("cluster", WARN if notes else PASS, "; ".join([summary, *notes])), widest


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping ranges made one (gaps seen by different seeds may overlap)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


async def check_cluster(state: StateSettings) -> list[Result]:
    """The ``cluster``, ``redis`` and ``lua scripts`` rows for a ``redis+cluster://`` URL."""
    target = cluster_target(state.redis_url)
    views = await asyncio.gather(*(_ask(seed, target.username, target.password) for seed in target.nodes))
    cluster, widest = _judge(list(views))
    if widest is None or not widest.masters:
        why = "no seed answers" if widest is None else "no master serves slots"
        return [cluster, Result("redis", SKIP, why), Result("lua scripts", SKIP, why)]
    clients = [node_client(host, port, target.username, target.password) for host, port in sorted(widest.masters)]
    try:
        masters = await _ping_masters(clients, state)
        scripts = (await load_scripts(clients, f" on each of {len(clients)} masters") if masters.status != FAIL
                   else Result("lua scripts", SKIP, "a master does not answer"))
    finally:
        for client in clients:
            await close_quietly(client.aclose)
    return [cluster, masters, scripts]


async def _ping_masters(clients: list[Any], state: StateSettings) -> Result:
    """Every master's PING; the slowest decides WARN, any silent one FAILs."""
    rtts, versions, silent = [], set(), []
    for client in clients:
        kwargs = client.connection_pool.connection_kwargs
        try:
            with translated():
                async with asyncio.timeout(CHECK_TIMEOUT):
                    rtts.append(await ping_ms(client))
                    versions.add(str((await client.info("server")).get("redis_version", "?")))
        except BackendUnavailable as error:
            silent.append(f"{kwargs['host']}:{kwargs['port']} ({describe_failure(error)})")
    if silent:
        return Result("redis", FAIL, f"{len(silent)} of {len(clients)} masters do not answer: {'; '.join(silent)}")
    found = f"{len(clients)} masters answer (Redis {', '.join(sorted(versions))})"
    return timed("redis", found, max(rtts), state, ping="slowest PING")
