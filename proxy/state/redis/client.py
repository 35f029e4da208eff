"""The Redis client both stores use: a bounded pool, no retries, every wait within the timeout;
and the one place where Redis failures become :class:`~proxy.state.base.BackendUnavailable`
(:func:`translated`), so the stores catch only the project's own error.

redis-py's default pool opens one connection per concurrent command and refuses the 101st
("Too many connections"), and each new connection costs a handshake of several round trips:
a burst on a cold pool took many times a 50 ms timeout, which took the store down. A blocking
pool of a few connections instead makes a burst queue for a connection (the last of a burst
answers well within the timeout, cold or warm), and the wait counts against the same timeout as
the command. The figures are in bench/README.md, "Figures behind the code".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.state.base import BackendTimeout, BackendUnavailable

log = logging.getLogger("resilience_proxy.state")

MAX_CONNECTIONS = 16

_FOREIGN = (RedisError, OSError, ValueError)
"""What redis-py and the socket raise when Redis fails; ValueError: a reply redis-py cannot read."""

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
        if isinstance(error, TimeoutError):  # asyncio.timeout's, or a socket's
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
    ``decode_responses=False`` for a store that keeps bytes (webhook bodies)."""
    no_retry = Retry(NoBackoff(), 0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=no_retry, decode_responses=decode_responses,
    )
    return aioredis.Redis(connection_pool=pool, retry=no_retry)


def describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def cancel_tasks(tasks: list[asyncio.Task[None]]) -> None:
    current = asyncio.current_task()
    tasks = [task for task in tasks if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def without_password(url: str) -> str:
    """The URL for log lines: a password in ``redis://user:secret@host`` never reaches a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username + ':' if parts.username else ':'}***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


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
