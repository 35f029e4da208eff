"""Server-Sent Events to many clients, none of which can slow anything else down.

:meth:`EventStream.publish` never waits: it puts one encoded message on each client's own queue and
wakes the client's writer. Each queue is bounded and drops to the latest: a message published as
``latest_only`` (a full set of stats) replaces the one of its kind still waiting, and past
:data:`QUEUE` messages the oldest of the others goes (for transitions that is harmless: the
page keeps only the last 50). So a client that reads slowly, or not at all, costs one short queue
and its socket buffers; a write that makes no progress for :data:`WRITE_TIMEOUT` ends its stream,
and the browser's EventSource reconnects (after ``retry:``) and starts again from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.web.admin.auth import refuse

log = logging.getLogger("resilience_proxy.admin")

QUEUE = 64
"""Messages waiting per client, at most."""
MAX_CLIENTS = 100
"""Open streams per process; more get 503 (a status page is for people, not for scrapers)."""
RETRY_MS = 2000
"""What the browser waits before reconnecting (the ``retry:`` field)."""
HEARTBEAT = 15.0
"""A comment line this often on a quiet stream, so proxies keep it open and a dead client is found."""
WRITE_TIMEOUT = 10.0
"""A write that cannot go out for this long (a client that stopped reading) ends the stream."""


def sse(event: str, data: str) -> bytes:
    """One SSE message; ``data`` must be a single line (compact JSON is)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


class _Client:
    __slots__ = ("closed", "queue", "wake")

    def __init__(self) -> None:
        self.queue: deque[tuple[str, bool, bytes]] = deque()
        """(event, latest_only, message), oldest first."""
        self.wake = asyncio.Event()
        self.closed = False

    def put(self, event: str, latest_only: bool, message: bytes) -> None:
        queue = self.queue
        if latest_only:
            for item in queue:
                if item[0] == event:
                    queue.remove(item)
                    break
        elif len(queue) >= QUEUE:
            oldest = next((item for item in queue if not item[1]), None)
            if oldest is not None:
                queue.remove(oldest)
        queue.append((event, latest_only, message))
        self.wake.set()

    def take(self) -> bytes:
        messages = b"".join(item[2] for item in self.queue)
        self.queue.clear()
        self.wake.clear()
        return messages


class EventStream:
    """The open ``text/event-stream`` responses of one endpoint, and the fan-out to them."""

    def __init__(self) -> None:
        self._clients: set[_Client] = set()
        self._closing = False

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, event: str, data: str, latest_only: bool = False) -> None:
        """Queue ``data`` for every client; never waits. ``latest_only``: a newer one replaces it."""
        if not self._clients:
            return
        message = sse(event, data)
        for client in self._clients:
            client.put(event, latest_only, message)

    async def serve(self, request: web.BaseRequest, first: Callable[[], Awaitable[bytes]]) -> web.StreamResponse:
        """Answer ``request`` with a stream: ``retry:``, then ``first()`` (the snapshot), then what is
        published, until the client leaves, stops reading, or :meth:`close`."""
        if self._closing:
            return refuse(503, "shutting down", **{"Retry-After": "5"})
        if len(self._clients) >= MAX_CLIENTS:
            return refuse(503, f"too many open status streams (at most {MAX_CLIENTS})", **{"Retry-After": "10"})
        client = _Client()
        self._clients.add(client)  # from here on, nothing published is missed
        response: web.StreamResponse | None = None
        try:
            snapshot = await first()
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
                "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"})
            await response.prepare(request)
            await self._write(response, f"retry: {RETRY_MS}\n\n".encode() + snapshot)
            while not client.closed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HEARTBEAT):
                        await client.wake.wait()
                if client.closed:
                    break
                await self._write(response, client.take() or b": keep-alive\n\n")
        except TimeoutError:
            # It stopped reading: cut the connection (a polite end would wait on the same full buffer).
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            pass  # it left; its EventSource, if still there, reconnects and gets a snapshot
        finally:
            self._clients.discard(client)
        return response if response is not None else web.Response(status=499)

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT):
            await response.write(data)

    def close(self) -> None:
        """End every stream (at shutdown), so that the listener does not wait for them."""
        self._closing = True
        for client in self._clients:
            client.closed = True
            client.wake.set()
