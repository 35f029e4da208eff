"""The doctor's Redis rows: which Redis ``state.redis_url`` leads to, whether it can serve, and the scripts.

- one server (``redis://``, ``rediss://``, ``unix://``): ``redis`` says where, its version and role,
  and the PING round trip. A replica, a cluster node or a sentinel there FAILs: the sidecar could
  not write (READONLY), would meet MOVED, or would send scripts to a sentinel.
- Sentinel: ``sentinel`` asks every configured sentinel on its own which master it names
  (N answering of M; WARN when some do not answer or they disagree), then ``redis`` is that master.
- Cluster: :mod:`proxy.doctor.cluster_checks`, with the helpers here.

``lua scripts`` is SCRIPT LOAD of every breaker and rate-limit script, on every master of a cluster
(EVALSHA runs on the master of its key's slot). A password never appears in a row.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.config.model import StateSettings
from proxy.config.redis_url import is_cluster, is_sentinel, sentinel_target, without_password
from proxy.doctor.network import CHECK_TIMEOUT, describe_failure
from proxy.doctor.report import FAIL, PASS, SKIP, WARN, Result
from proxy.state.base import BackendUnavailable
from proxy.state.redis import breaker_scripts, limits
from proxy.state.redis.client import connect, translated

SCRIPTS = {**breaker_scripts.SCRIPTS.texts, **limits.SCRIPTS.texts, **limits.CLUSTER_SCRIPTS.texts}
"""Every script a store may load (the cluster's refund too: one compile check whatever the URL)."""
SLOW_REDIS_MS = 10.0
"""A PING slower than this eats most of a 50 ms ``redis_timeout`` before any script runs."""


def row_names(redis_url: str) -> tuple[str, ...]:
    """The rows the Redis checks give for this URL, in order."""
    if is_cluster(redis_url):
        return ("cluster", "redis", "lua scripts")
    if is_sentinel(redis_url):
        return ("sentinel", "redis", "lua scripts")
    return ("redis", "lua scripts")


async def check_redis(state: StateSettings) -> list[Result]:
    """One server, or a master behind Sentinel: the ``sentinel`` row, ``redis`` and ``lua scripts``."""
    client = connect(state.redis_url, CHECK_TIMEOUT, max_connections=1)
    try:
        topology: list[Result] = []
        kwargs = client.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        if is_sentinel(state.redis_url):
            sentinel, master = await check_sentinels(state.redis_url)
            if master is None:
                return [sentinel, Result("redis", SKIP, "no master"), Result("lua scripts", SKIP, "no master")]
            topology.append(sentinel)
            where = f"{master[0]}:{master[1]}"
        try:
            with translated():
                async with asyncio.timeout(CHECK_TIMEOUT):
                    rtt = await ping_ms(client)
                    info = await client.info()
        except BackendUnavailable as error:
            return [*topology, Result("redis", FAIL, f"{without_password(state.redis_url)}: {describe_failure(error)}"),
                    Result("lua scripts", SKIP, "Redis unreachable")]
        server = _server(where, info, rtt, state)
        if server.status == FAIL:
            return [*topology, server, Result("lua scripts", SKIP, "not a master")]
        return [*topology, server, await load_scripts([client])]
    finally:
        await client.aclose()


def _server(where: str, info: dict[str, Any], rtt: float, state: StateSettings) -> Result:
    """What answered must be what the URL says: a master, not a replica, cluster node or sentinel."""
    what = "master" if is_sentinel(state.redis_url) else "single server"
    found = f"{what} at {where} (Redis {info.get('redis_version', '?')}, {info.get('role', '?')})"
    mode = info.get("redis_mode")
    if mode == "cluster":
        return Result("redis", FAIL, f"{found} is a Redis Cluster node: write redis+cluster://{where}[,host:port...]")
    if mode == "sentinel":
        return Result("redis", FAIL, f"{found} is a sentinel: write redis+sentinel://{where}/MASTER_NAME")
    if info.get("role") != "master":
        hint = "a failover under way? run doctor again" if is_sentinel(state.redis_url) else \
            "read-only, the scripts' writes fail: point state.redis_url at the master"
        return Result("redis", FAIL, f"{found}: a replica ({hint})")
    return timed("redis", found, rtt, state)


def timed(check: str, found: str, rtt: float, state: StateSettings, ping: str = "PING") -> Result:
    """PASS, or WARN when the round trip eats most of ``redis_timeout`` before any script runs."""
    if rtt > SLOW_REDIS_MS:
        return Result(check, WARN, f"{found}: {ping} {rtt:.1f} ms (over {SLOW_REDIS_MS:g} ms; "
                                   f"redis_timeout is {state.redis_timeout * 1000:g} ms)")
    return Result(check, PASS, f"{found}: {ping} {rtt:.1f} ms")


PINGS = 5
"""Round trips timed after the one that opens the connection; the fastest is reported."""


async def ping_ms(client: aioredis.Redis) -> float:
    """The fastest of ``PINGS`` round trips in milliseconds (the first PING opens the connection). The
    fastest, not one: a single PING also times this process's scheduling, and on a busy machine one in
    a few took over 10 ms while Redis itself answered in well under one; a Redis that is slow is slow
    every time."""
    await client.ping()
    fastest = float("inf")
    for _ in range(PINGS):
        started = time.perf_counter()
        await client.ping()
        fastest = min(fastest, (time.perf_counter() - started) * 1000)
    return fastest


async def load_scripts(clients: list[aioredis.Redis], where: str = "") -> Result:
    """SCRIPT LOAD of every breaker and rate-limit script through each client (``where``: on how many)."""
    try:
        with translated():
            async with asyncio.timeout(CHECK_TIMEOUT):
                for client in clients:
                    for text in SCRIPTS.values():
                        await client.script_load(text)
    except BackendUnavailable as error:
        return Result("lua scripts", FAIL, describe_failure(error))
    return Result("lua scripts", PASS, f"{len(SCRIPTS)} loaded{where}: {', '.join(sorted(SCRIPTS))}")


async def check_sentinels(url: str) -> tuple[Result, tuple[str, int] | None]:
    """Ask every configured sentinel, each on its own, which master it names; the row and that master."""
    target = sentinel_target(url)
    answers = await asyncio.gather(*(_master_named_by(host, port, target.master, target.username, target.password)
                                      for host, port in target.sentinels))
    configured = len(target.sentinels)
    silent = [f"{host}:{port} ({answer})" for (host, port), answer in zip(target.sentinels, answers)
              if isinstance(answer, str)]
    named = Counter(answer for answer in answers if isinstance(answer, tuple))
    answering = configured - len(silent)
    heard = f"{answering} of {configured} sentinels answer"
    if answering == 0:
        return Result("sentinel", FAIL, f"{heard}, master {target.master} unknown: {'; '.join(silent)}"), None
    if not named:
        return Result("sentinel", FAIL, f"{heard}; none knows a master named {target.master}"), None
    (host, port), votes = named.most_common(1)[0]
    detail = f"{heard}, master {target.master} at {host}:{port}"
    notes = []
    if len(named) > 1 or votes < answering:
        others = ", ".join(f"{h}:{p}" for (h, p) in named if (h, p) != (host, port)) or "none"
        notes.append(f"only {votes} name it (others: {others}): a failover under way?")
    if silent:
        notes.append(f"not answering: {'; '.join(silent)}")
    return Result("sentinel", WARN if notes else PASS, "; ".join([detail, *notes])), (host, port)


async def _master_named_by(host: str, port: int, master: str, username: str | None,
                           password: str | None) -> tuple[str, int] | None | str:
    """(host, port) the sentinel names, None when it knows no such master, else why it did not answer."""
    client = node_client(host, port, username, password)
    try:
        with translated():
            async with asyncio.timeout(CHECK_TIMEOUT):
                answer: Any = await client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", master)
    except BackendUnavailable as error:
        return describe_failure(error)
    finally:
        await client.aclose()
    return None if not answer else (str(answer[0]), int(answer[1]))


def node_client(host: str, port: int, username: str | None, password: str | None) -> aioredis.Redis:
    """A plain client for one sentinel or cluster node: one connection, no retries, every wait bounded."""
    return aioredis.Redis(host=host, port=port, username=username, password=password, decode_responses=True,
                          socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT,
                          retry=Retry(NoBackoff(), 0), single_connection_client=True)
