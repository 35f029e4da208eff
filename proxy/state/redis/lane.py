"""Commands from many requests over one Redis connection, pipelined as they queue up.

The rate limiter sends one EVALSHA per request. Through redis-py's client each command costs
far more of the sidecar's CPU than the command itself, even for a PING (pool checkout and
check-in with their locks, health checks, event dispatch); packed and parsed by the same
redis-py connection with hiredis, the command costs a fraction of that. So the limiter keeps one connection of its own
and sends on it whatever requests have queued since the last write: one write and one read
burst for a batch, replies matched to callers in order (what ioredis calls auto-pipelining).
Under load batches grow and the cost per request falls further; a lone request goes out at once.

Parsing and the socket stay redis-py's (:class:`redis.asyncio.Connection`, with hiredis);
commands are packed by hiredis too, because redis-py's asyncio packer is pure Python and was the
largest cost left. Only the batching is ours. (Figures: bench/README.md, "Figures behind the code".)
A reply that is a Redis error fails its own caller only; a broken connection fails every caller
waiting on it, and the next command reconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import hiredis
from redis.exceptions import ResponseError

Command = Sequence[Any]


class ConnectionSource(Protocol):
    """Where a lane's connection comes from: a client's pool, or one node of a cluster."""

    connection_class: Any
    connection_kwargs: dict[str, Any]


class Lane:
    """One connection made from ``pool``'s settings (not taken from it), shared by every caller."""

    def __init__(self, pool: ConnectionSource) -> None:
        self._connection = pool.connection_class(**pool.connection_kwargs)
        self._queue: list[tuple[Command, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def execute(self, *command: Any) -> Any:
        """Send ``command`` with the next batch and return its reply; raises what Redis or the socket raised."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((command, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def ping_for(self, key: str) -> Any:
        """PING on this lane (it serves every key; a cluster's lanes ask the one that serves ``key``)."""
        return await self.execute("PING")

    async def connect(self) -> None:
        """Open the connection now rather than with the first command."""
        await self._connection.connect()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self._fail(self._queue, ConnectionError("Redis lane closed"))
        self._queue = []
        await self._connection.disconnect()

    async def _drain(self) -> None:
        """Send what has queued, read the replies, repeat until nothing waits."""
        connection = self._connection
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await connection.connect()
                await connection.send_packed_command(b"".join(_pack(command) for command, _ in batch),
                                                     check_health=False)
                for _, future in batch:
                    try:
                        reply = await connection.read_response()
                    except ResponseError as error:  # this command's own error, e.g. NOSCRIPT
                        if not future.done():
                            future.set_exception(error)
                        continue
                    if not future.done():
                        future.set_result(reply)
            except BaseException as error:
                self._fail(batch, error)
                await connection.disconnect()
                if not isinstance(error, Exception):
                    raise

    @staticmethod
    def _fail(batch: Sequence[tuple[Command, asyncio.Future[Any]]], error: BaseException) -> None:
        """Fail every caller of ``batch`` still waiting (the connection's state is unknown past an error)."""
        failure = error if isinstance(error, Exception) else ConnectionError("Redis lane stopped")
        for _, future in batch:
            if not future.done():
                future.set_exception(failure)


def _pack(command: Command) -> bytes:
    return hiredis.pack_command(tuple(command))
