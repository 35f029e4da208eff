"""The Redis client both stores use: a bounded pool, no retries, every wait within the timeout;
and the one place where Redis failures become :class:`~proxy.state.base.BackendUnavailable`
(:func:`translated`), so the stores catch only the project's own error.

redis-py's default pool opens one connection per concurrent command and refuses the 101st
("Too many connections"), and each new connection costs a handshake of several round trips:
a burst on a cold pool took many times a 50 ms timeout, which took the store down. A blocking
pool of a few connections instead makes a burst queue for a connection (the last of a burst
answers well within the timeout, cold or warm), and the wait counts against the same timeout as
the command. The figures are in bench/README.md, "Figures behind the code".

A ``redis+cluster://`` URL gives redis-py's cluster client instead (:mod:`proxy.state.redis.cluster`):
the stores use it as they use one Redis, except for the few steps a cluster does per node
(:func:`reconnect`, :func:`ping`, loading scripts, the lane, the subscription).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.config.redis_url import (  # without_password: for the stores and doctor
    is_cluster,
    is_sentinel,
    sentinel_target,
    without_password,
)
from proxy.state.base import BackendTimeout, BackendUnavailable
from proxy.state.redis import cluster

log = logging.getLogger("resilience_proxy.state")

MAX_CONNECTIONS = 16

_FOREIGN = (RedisError, RedisClusterException, OSError, ValueError)
"""What redis-py and the socket raise when Redis fails; ValueError: a reply redis-py cannot read;
RedisClusterException: a cluster whose slots are not all served, or whose nodes none answers (the
cluster's other failures, CLUSTERDOWN, TRYAGAIN, MASTERDOWN, MaxConnectionsError, are RedisErrors)."""

BackendEmit = Callable[[bool], None]
"""Told False when a store falls back to local decisions, True when Redis serves again."""


class _Translated:
    """See :func:`translated` (a class rather than a generator: it wraps every rate-limited request)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        if error is None or isinstance(error, BackendUnavailable):
            return False
        if isinstance(error, (TimeoutError, RedisTimeoutError)) or (
                isinstance(error, _FOREIGN) and isinstance(error.__cause__, TimeoutError)):
            # asyncio.timeout's, a socket's, redis-py's ("Timeout connecting to server"), or its "No
            # connection available." (a blocking pool whose wait timed out: every connection busy, not
            # Redis gone). A late event loop looks the same; the store confirms an outage with a PING.
            raise BackendTimeout(describe(error)) from error
        if isinstance(error, _FOREIGN):
            raise BackendUnavailable(describe(error)) from error
        return False


_TRANSLATED = _Translated()


def translated() -> _Translated:
    """The one place where Redis failures become :class:`BackendUnavailable` (``from`` the original):
    ``with translated(): async with asyncio.timeout(t): await ...``. Anything else passes untouched."""
    return _TRANSLATED


async def close_quietly(close: Callable[[], Awaitable[Any]]) -> None:
    """Close a client, a subscription or a lane; redis-py may time out closing a busy connection."""
    with contextlib.suppress(BackendUnavailable), translated():
        await close()


CONFIRM_FACTOR = 4
"""How many timeouts a confirming PING may take: a call that ran out of time takes a store down only
when Redis then fails to answer a PING in this many timeouts (under load the event loop itself can be
late by more than a 50 ms timeout while Redis answered in time)."""


def connect(url: str, timeout: float, *, max_connections: int = MAX_CONNECTIONS,
            decode_responses: bool = True) -> aioredis.Redis:
    """A client for ``url`` that never retries on its own (the stores decide what a failure means).
    ``decode_responses=False`` for a store that keeps bytes (webhook bodies). A ``redis+sentinel://``
    URL gives a client whose pool asks the sentinels for the master on every new connection, so
    after a failover the next connection goes to the new master. A ``redis+cluster://`` URL gives a
    :class:`~proxy.state.redis.cluster.ClusterClient` (typed as a Redis: the commands the stores
    send are the same), with ``max_connections`` commands under way at most."""
    no_retry = Retry(NoBackoff(), 0)
    settings: dict[str, Any] = {"max_connections": max_connections, "timeout": timeout, "socket_timeout": timeout,
                                "socket_connect_timeout": timeout, "retry": no_retry,
                                "decode_responses": decode_responses}
    if is_sentinel(url):
        return _sentinel_client(url, settings)
    if is_cluster(url):
        return cluster.cluster_client(url, settings)  # type: ignore[return-value]
    pool = aioredis.BlockingConnectionPool.from_url(url, **settings)
    return aioredis.Redis(connection_pool=pool, retry=no_retry)


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's master discovery with the blocking pool's bounded queue (see the module docstring)."""


class _SentinelRedis(aioredis.Redis):
    """The master's client; closing it closes the sentinel clients too (they are ours alone)."""

    sentinel: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await self.sentinel.aclose()


def _sentinel_client(url: str, settings: dict[str, Any]) -> aioredis.Redis:
    """``master_for`` builds a new pool on each call: called once here, for the client's lifetime."""
    target = sentinel_target(url)
    auth = {"username": target.username, "password": target.password}
    sentinel = Sentinel(target.sentinels, sentinel_kwargs={
        "socket_timeout": settings["socket_timeout"], "socket_connect_timeout": settings["socket_connect_timeout"],
        "retry": settings["retry"], **auth,
    }, **auth)
    client = sentinel.master_for(target.master, redis_class=_SentinelRedis,
                                 connection_pool_class=_BlockingSentinelPool, db=target.db, **settings)
    client.sentinel = sentinel
    return client


async def reconnect(client: aioredis.Redis) -> None:
    """Drop every connection (those from before a restart are dead) and check that Redis answers.
    In a cluster: read the slot map again and PING every master (a failover under way fails it)."""
    if isinstance(client, RedisCluster):
        await cluster.reset(client)
        return
    await client.connection_pool.disconnect()
    await client.ping()


async def ping(client: aioredis.Redis, keys: Sequence[str] = ()) -> None:
    """PING the Redis that serves ``keys``: the one Redis; in a cluster, the masters of ``keys``' slots
    (a confirmation asks whether the node a call waited on answers: another master says nothing about it)."""
    if isinstance(client, RedisCluster):
        await cluster.ping(client, keys)
        return
    await client.ping()


def describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    current = asyncio.current_task()
    tasks = [task for task in tasks if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class RedisHealth:
    """What both Redis stores keep about Redis itself: up or not, failures so far, who wants to
    know, the background tasks, and the loop that waits for Redis to answer again.

    A store calls :meth:`_recovering` when it stops calling Redis; the loop calls the store's
    ``_connect`` every ``retry_interval`` until it succeeds (``_connect`` sets ``_up``).
    """

    _what = "state"
    """What the log lines say is shared again, e.g. ``breakers``."""

    def __init__(self, redis_url: str, retry_interval: float) -> None:
        self._shown_url = without_password(redis_url)
        self._retry_interval = retry_interval
        self._up = False
        self._closing = False
        self._backend_failures = 0
        self._emit_backend: BackendEmit = _ignore
        self._tasks: set[asyncio.Task[None]] = set()
        self._sentinel = is_sentinel(redis_url)
        self._client: aioredis.Redis | None = None

    @property
    def backend_up(self) -> bool:
        """True while Redis serves; False while this process decides locally."""
        return self._up

    @property
    def backend_failures(self) -> int:
        """Failed Redis calls so far, the background checks while it is down included."""
        return self._backend_failures

    def emit_backend_to(self, emit: BackendEmit) -> None:
        """``emit(False)`` when the store stops calling Redis, ``emit(True)`` when it serves again."""
        self._emit_backend = emit

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _first_connect(self, meanwhile: str) -> None:
        """Connect at start; if Redis does not answer, start down and keep trying (never raises).
        ``meanwhile``: what the store does until Redis answers, for the log line."""
        try:
            with translated():
                await self._connect()
        except BackendUnavailable as error:
            self._backend_failures += 1
            log.warning("Redis at %s unreachable (%s): %s until it answers", self._shown_url, describe(error),
                        meanwhile)
            self._recovering()
        if self._sentinel:
            self._spawn(self._follow_master())

    async def _follow_master(self) -> None:
        """Ask the sentinels for the master every ``retry_interval``; when it moved, drop every connection.

        The pool asks the sentinels only when it opens a connection, and a demoted master answers
        reads and, until Sentinel reconfigures it (seconds later), writes too: without this the
        store's open connections (the breakers' subscription, the limiter's lane) would stay on it.
        A command cut off fails like any Redis failure (local fallback); the next connection, or
        the store's recovery, goes to the new master."""
        assert self._client is not None
        pool = self._client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        known = None
        while True:
            try:
                with translated():
                    address = await pool.sentinel_manager.discover_master(pool.service_name)
            except BackendUnavailable:
                address = known  # no sentinel answers: stay on the master we know
            if known is not None and address != known:
                log.warning("Redis master for %s moved to %s:%s: reconnecting", self._shown_url, *address)
                with contextlib.suppress(BackendUnavailable), translated():
                    await self._master_moved()
            known = address
            await asyncio.sleep(self._retry_interval)

    async def _master_moved(self) -> None:
        """Close every connection to the old master, in use or not (a store with more adds to this)."""
        assert self._client is not None
        await self._client.connection_pool.disconnect(inuse_connections=True)

    def _recovering(self) -> None:
        """Start waiting for Redis in the background and say it is down."""
        self._spawn(self._recover())
        self._emit_backend(False)

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval)
            try:
                with translated():
                    await self._connect()
            except BackendUnavailable:
                self._backend_failures += 1
                continue
            log.warning("Redis at %s answers again: %s are shared with the fleet", self._shown_url, self._what)
            self._emit_backend(True)
            return

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _ignore(up: bool) -> None:
    pass
