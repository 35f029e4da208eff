"""Streaming one request to its upstream and the answer back, with back-pressure both ways.

One pooled ``ClientSession`` per upstream (keep-alive, DNS cache, verified TLS, no cookie
jar: a shared jar would hand one client's cookies to the next). Bodies are never buffered
whole: chunks are relayed as they come, and ``write()`` waits while the client is slow.
The upstream's bytes are relayed as they are: no decompression, no redirects followed.

This is the one place where aiohttp's client exceptions become :mod:`proxy.errors`; what each
means (a breaker failure, a retry kind) is :mod:`proxy.policy.classify`'s call.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, istr
from yarl import URL

from proxy.config.model import Upstream
from proxy.errors import (
    BodyTooLarge,
    ProxyError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponseError,
    UpstreamTimeout,
)
from proxy.guard import Reply
from proxy.policy.classify import body_decides
from proxy.web.body import BodyStream
from proxy.web.deadlines import Deadlines
from proxy.web.exchange import Exchange
from proxy.web.headers import HeaderPolicy, to_client
from proxy.web.tls import upstream_ssl

ERROR_BODY_LIMIT = 16 * 1024


_NOT_ADDED = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
"""Headers aiohttp would add to a request that lacks them: the upstream gets the client's, or none."""


class _AsSent(aiohttp.ClientRequest):
    """A client request that gains none of :data:`_NOT_ADDED`.

    aiohttp's ``skip_auto_headers`` path sorts the skip list into a new multidict and copies the
    request's headers for every request (about 4% of a proxied request's CPU, bench/README.md). Here
    every header it could add is skipped, so nothing is left to add: only the skip list, which the rest
    of the request reads (the Content-Type default, a payload's own headers), is set, built once.
    """

    _SKIPPED = frozenset(istr(name) for name in _NOT_ADDED)
    _SKIP_LIST: CIMultiDict[None] = CIMultiDict((name, None) for name in sorted(_SKIPPED))

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if skip_auto_headers is None or frozenset(skip_auto_headers) != self._SKIPPED:
            super().update_auto_headers(skip_auto_headers)
            return
        self._skip_auto_headers = self._SKIP_LIST


class UpstreamClient:
    """The connection pool and header policy for one upstream.

    No ``sock_read`` timeout on the session: it would start and cancel two loop timers per request.
    The response head is bounded by :func:`open_response`'s timeout, on the client's
    :class:`~proxy.web.deadlines.Deadlines` (one timer for all its attempts); a body that has not come
    whole with its head is read with a stall timeout of its own (:func:`_chunks`)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.headers = HeaderPolicy(upstream)
        connector = aiohttp.TCPConnector(  # ssl: the system's CAs, plus the bundle's
            limit=upstream.max_connections, ttl_dns_cache=60, ssl=upstream_ssl(upstream.ca_bundle),
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_NOT_ADDED,
            request_class=_AsSent,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=upstream.connect_timeout),
            raise_for_status=False,
        )
        # aiohttp resends a GET/PUT/DELETE once, silently, when the connection drops: an attempt that
        # the retry policy, its budget and the breaker never see (and a second send with retries
        # off). The sidecar's own retries decide on ``reset``. No public switch: its test client
        # sets the same attribute.
        self.session._retry_connection = False
        self.deadlines = Deadlines()

    async def close(self) -> None:
        self.deadlines.close()
        await self.session.close()


_BODY_HEADERS = ("Content-Length", "Content-Type", "Content-Encoding", "Transfer-Encoding", "Expect")


async def try_once(client: UpstreamClient, request: web.BaseRequest, url: str, body: BodyStream | bytes | None,
                   timeout: float) -> Reply:
    """One try at the upstream, up to its response head, as a value: a failure is reported, not raised,
    so that the guard can weigh it. An answer whose meaning depends on its body (the classifier says
    which) has its small JSON body read whole here, to be judged and then relayed as it came."""
    started = time.perf_counter()
    try:
        response = await open_response(client, request, url, body, timeout)
    except ProxyError as failure:
        return Reply(failure=failure, seconds=time.perf_counter() - started)
    reply = Reply(response.status, retry_after=response.headers.get("Retry-After"),
                  seconds=time.perf_counter() - started, response=response)
    if body_decides(response.status):
        read = await read_error_body(response, client.upstream.timeout)
        if read is not None:
            reply.body, reply.peeked = read
    return reply


async def open_response(client: UpstreamClient, request: web.BaseRequest, url: str, body: BodyStream | bytes | None,
                        timeout: float, method: str | None = None) -> aiohttp.ClientResponse:
    """Send the request once and wait for the response head; failures raise a ProxyError.

    ``method``: send a bodiless request of this method instead (the client's credentials kept),
    as the duplicate lookup does."""
    upstream = client.upstream
    headers = client.headers.to_upstream(request)
    if method is not None:
        for name in _BODY_HEADERS:
            headers.popall(name, None)
    try:
        # Never past the upstream's timeout: a per-try timeout longer than it was cut there by the
        # session's read timeout before (the message names the bound that applied).
        timeout = min(timeout, upstream.timeout)
        with client.deadlines.bound(timeout):
            return await client.session.request(
                method or request.method, URL(url, encoded=True), headers=headers, data=body,
                allow_redirects=False,
            )
    except BaseException as exc:
        if isinstance(body, BodyStream) and body.too_large:
            raise BodyTooLarge(f"request body over the limit of {upstream.max_request_body} bytes",
                               upstream=upstream.name) from None
        translated = _translate(exc, upstream, waiting_for="a response", timeout=timeout)
        if translated is None:
            raise
        raise translated from exc


async def read_error_body(answer: aiohttp.ClientResponse, stall: float,
                          limit: int = ERROR_BODY_LIMIT) -> tuple[bytes, bytes | None] | None:
    """A small JSON answer's body, decoded (gzip/deflate) for inspection only; None for anything else.
    ``stall``: seconds without a byte after which the upstream is taken to have failed.

    Read only when its length is announced and small, so a streamed success body is never held.
    The raw bytes are returned as well, for :func:`relay` to send as they came: ``(raw, decoded)``.
    """
    length = answer.content_length
    if length is None or length > limit or "json" not in answer.headers.get("Content-Type", ""):
        return None
    try:
        raw = b"".join([chunk async for chunk in _chunks(answer.content, stall)])
    except (aiohttp.ClientError, TimeoutError) as exc:
        # What was read is gone: the relay must cut the answer short rather than send its tail.
        answer.content.set_exception(exc)
        return None
    encoding = answer.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "deflate"):
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
            return raw, inflater.decompress(raw, 4 * limit)
        except zlib.error:
            return raw, None
    return raw, (raw if not encoding or encoding == "identity" else None)


class _WholeBody(web.StreamResponse):
    """An answer whose whole body is in hand: its head waits for the body, and both leave in one write
    (one send syscall, one wake-up of the client, instead of two). aiohttp's own ``Response`` sets this
    flag; versions before it existed send the head at once, as for any streamed answer."""

    _send_headers_immediately = False


async def relay(answer: aiohttp.ClientResponse, request: web.BaseRequest, exchange: Exchange, upstream: Upstream,
                headers: dict[str, str], body: bytes | None = None) -> web.StreamResponse:
    """Stream the upstream's answer to the client, adding ``headers``; always releases ``answer``.
    ``body``: the answer's body when it was already read whole (:func:`read_error_body`).

    After the response head is out, an upstream failure can only cut the body short
    (``exchange.truncated``). A client that goes away mid-response raises ConnectionError.
    """
    try:
        content = answer.content
        if body is None and content.is_eof() and content.exception() is None:
            body = content.read_nowait()  # the whole body came with the head: nothing to wait for
        kind = web.StreamResponse if body is None else _WholeBody
        response = kind(status=answer.status, reason=answer.reason, headers=to_client(answer.headers))
        response.headers.update(headers)
        exchange.status = answer.status
        await response.prepare(request)
        if body is not None:
            await response.write_eof(body)
            exchange.bytes_out += len(body)
            return response
        try:
            async for chunk in _chunks(answer.content, upstream.timeout):
                await response.write(chunk)
                exchange.bytes_out += len(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The head is out: the only honest signal left is to cut the connection, so the client
            # sees a truncated body instead of a complete-looking one. aiohttp's own final write
            # then finds the transport closed and gives up quietly.
            failure = _translate(exc, upstream, waiting_for="the rest of the body")
            exchange.truncated = True
            exchange.error = failure.proxy_status if failure else type(exc).__name__
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response
    finally:
        answer.release()


async def _chunks(content: aiohttp.StreamReader, stall: float) -> AsyncIterator[bytes]:
    """A body's bytes as they come; TimeoutError when none came for ``stall`` seconds (the clock runs
    only while waiting for the upstream, never while the client is slow to take what was read)."""
    while True:
        if content.is_eof():
            chunk = content.read_nowait()  # all that is left is here: no wait, no timer
        else:
            async with asyncio.timeout(stall):
                chunk = await content.readany()
        if not chunk:
            return
        yield chunk


def _translate(exc: BaseException, upstream: Upstream, waiting_for: str,
               timeout: float | None = None) -> UpstreamError | None:
    """aiohttp's exception for a failed exchange as one of ours; None for anything else (a bug, a cancel)."""
    name = upstream.name
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return UpstreamConnectError(f"{name}: cannot resolve {exc.host}", upstream=name, proxy_status="dns_error")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UpstreamConnectError(f"{name}: TLS certificate not trusted: {exc.certificate_error}",
                                    upstream=name, proxy_status="tls_certificate_error")
    if isinstance(exc, (aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError)):
        return UpstreamConnectError(f"{name}: TLS handshake failed", upstream=name, proxy_status="tls_protocol_error")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"{name}: cannot connect to {exc.host}:{exc.port} ({exc.strerror or 'refused'})",
                                    upstream=name)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"{name}: no connection in {upstream.connect_timeout:g}s", upstream=name,
                               proxy_status="connection_timeout")
    if isinstance(exc, TimeoutError):
        if waiting_for == "a response":
            return UpstreamTimeout(f"{name}: no response in {timeout or upstream.timeout:g}s", upstream=name)
        return UpstreamTimeout(f"{name}: body stalled for {upstream.timeout:g}s", upstream=name,
                               proxy_status="connection_read_timeout")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamResponseError(f"{name}: response body cut short", upstream=name)
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamResponseError(f"{name}: invalid HTTP response ({_parser_reason(exc.message)})", upstream=name,
                                     proxy_status="http_protocol_error")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return UpstreamResponseError(f"{name}: connection closed before {waiting_for}", upstream=name,
                                     proxy_status="connection_terminated")
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamResponseError(f"{name}: {type(exc).__name__}", upstream=name)  # its text may hold the URL's query
    return None


def _parser_reason(message: str) -> str:
    """The parser's reason without the bytes it quotes (``Invalid header value char:\n\n  b'Set-Cookie: ...'``):
    the message reaches the client, the logs, Sentry and Slack, and the quoted line may hold a secret."""
    reason = message.split("\n", 1)[0].split("'", 1)[0].split('"', 1)[0].strip().rstrip(":").strip()
    return reason[:120] or "unreadable"
