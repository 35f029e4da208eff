"""The Redis client both stores use: a bounded pool, no retries, every wait within the timeout.

redis-py's default pool opens one connection per concurrent command and refuses the 101st
("Too many connections"), and each new connection costs a handshake of several round trips:
a burst of 200 requests on a cold pool took 375 ms, far past a 50 ms timeout, which took the
store down. A blocking pool of a few connections instead makes a burst queue for a connection
(200 EVALSHAs at once: 19 ms for the last one, cold or warm), and the wait counts against the
same timeout as the command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

MAX_CONNECTIONS = 16

ERRORS = (RedisError, OSError, TimeoutError, ValueError)
"""What makes a store fall back to local decisions; ValueError: a reply it cannot read."""

BackendListener = Callable[[bool], None]
"""Told False when a store falls back to local decisions, True when Redis serves again."""


def connect(url: str, timeout: float, *, max_connections: int = MAX_CONNECTIONS) -> aioredis.Redis:
    """A client for ``url`` that never retries on its own (the stores decide what a failure means)."""
    no_retry = Retry(NoBackoff(), 0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
        socket_connect_timeout=timeout, retry=no_retry, decode_responses=True,
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
