"""The client's request body: refused early when announced too large, read whole only when small and
needed (routing on its fields, replay for retries), streamed with its size limit enforced otherwise.

``Expect: 100-continue`` is answered only once the request will be forwarded (or its body is needed
to route it), so a client never uploads a body the sidecar is about to refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.config.model import Upstream
from proxy.config.policy_values import RetryPolicy
from proxy.errors import BodyTooLarge
from proxy.web.exchange import Exchange

_CHUNK = 64 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

class BodyStream:
    """The client's request body as an async iterator that enforces the size limit while streaming."""

    def __init__(self, request: web.BaseRequest, limit: int, exchange: Exchange) -> None:
        self._content = request.content
        self._limit = limit
        self._exchange = exchange
        self.too_large = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._content.iter_chunked(_CHUNK):
            self._exchange.bytes_in += len(chunk)
            if self._exchange.bytes_in > self._limit:
                self.too_large = True
                raise BodyTooLarge(f"request body over {self._limit} bytes")
            yield chunk


def check_length(request: web.BaseRequest, upstream: Upstream) -> None:
    """Refuse an announced body over the limit before anything is read or sent (413)."""
    length = request.content_length
    if length is not None and length > upstream.max_request_body:
        raise BodyTooLarge(f"request body of {length} bytes is over the limit of {upstream.max_request_body} bytes",
                           upstream=upstream.name)


async def request_body(request: web.BaseRequest, upstream: Upstream, retry: RetryPolicy, buffered: bytes | None,
                       exchange: Exchange) -> BodyStream | bytes | None:
    """The body to send: bytes read whole (replayable), a one-shot stream (never retried), or None.

    ``buffered``: what routing already read. A route that retries keeps a small body for replay; a
    larger one streams through once.
    """
    if not request.body_exists:
        return None
    if buffered is None and retry.attempts:
        buffered = await read_small_body(request, retry.replay_limit)
    if buffered is not None:
        exchange.bytes_in = len(buffered)
        return buffered
    if expects_continue(request):
        await send_continue(request)
    return BodyStream(request, upstream.max_request_body, exchange)


def expects_continue(request: web.BaseRequest) -> bool:
    """Whether the client waits for ``100 Continue`` before sending its body."""
    return request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue"


async def send_continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` (once we know the request will be forwarded)."""
    await request.writer.write(_CONTINUE)


async def read_small_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body if it announces a length up to ``limit``; None (nothing read) otherwise."""
    length = request.content_length
    if length is None or length > limit or not request.body_exists:
        return None
    if expects_continue(request):
        await send_continue(request)
    try:
        return await request.content.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionResetError("client closed the connection during the upload") from exc
