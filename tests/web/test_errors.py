"""What the client gets when the request or the upstream is bad: an answer, never a dropped connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from tests.conftest import StartSidecar, base_url, free_port
from tests.rawhttp import RawUpstream, read_request_head, send_raw


def assert_proxy_error(response: aiohttp.ClientResponse, status: int, error: str, body: dict) -> None:
    assert response.status == status
    assert response.headers["Proxy-Status"].startswith(f"resilience-proxy; error={error}; details=")
    assert body["status"] == status and body["code"] == error and body["message"]
    assert response.headers["X-Request-Id"] == body["request_id"]


async def test_refused_connection_is_a_502(http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    sidecar = await start_sidecar({"down": {"url": f"http://127.0.0.1:{free_port()}", "prefix": "/down"}})
    async with http.post(base_url(sidecar) + "/down/Messages.json", data={"To": "+15550001111"}) as response:
        assert_proxy_error(response, 502, "connection_refused", await response.json())


async def test_reset_before_the_response_head_is_a_502(http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.transport.abort()

    async with RawUpstream(reset) as upstream:
        sidecar = await start_sidecar({"flaky": {"url": upstream.url, "prefix": "/flaky"}})
        async with http.get(base_url(sidecar) + "/flaky/x") as response:
            assert_proxy_error(response, 502, "connection_terminated", await response.json())


async def test_a_dropped_get_put_or_delete_is_sent_once_when_retries_are_off(
        http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    """``retry: false`` means one send: the HTTP client must not repeat an idempotent request behind
    the sidecar's back (uncounted by attempts, budget and breaker)."""
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.transport.abort()

    async with RawUpstream(reset) as upstream:
        sidecar = await start_sidecar({"flaky": {"url": upstream.url, "prefix": "/flaky"}})
        for method in ("GET", "PUT", "DELETE"):
            upstream.connections = 0
            async with http.request(method, base_url(sidecar) + "/flaky/x") as response:
                assert (response.status, upstream.connections) == (502, 1), method


async def test_garbage_instead_of_http_is_a_502(http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async with RawUpstream(garbage) as upstream:
        sidecar = await start_sidecar({"odd": {"url": upstream.url, "prefix": "/odd"}})
        async with http.get(base_url(sidecar) + "/odd/x") as response:
            assert_proxy_error(response, 502, "http_protocol_error", await response.json())


async def test_reset_in_the_middle_of_the_body_cuts_the_client_short(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar
) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 400)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with RawUpstream(half) as upstream:
        sidecar = await start_sidecar({"half": {"url": upstream.url, "prefix": "/half"}})
        async with http.get(base_url(sidecar) + "/half/x") as response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def test_slow_upstream_is_a_504_after_the_timeout(http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        await asyncio.sleep(5)

    async with RawUpstream(silent) as upstream:
        sidecar = await start_sidecar({"slow": {"url": upstream.url, "prefix": "/slow", "timeout": "200ms"}})
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with http.get(base_url(sidecar) + "/slow/x") as response:
            body = await response.json()
        assert_proxy_error(response, 504, "http_response_timeout", body)
        assert body["message"] == "slow: no response in 0.2s"
        assert response.headers["Proxy-Status"] == (
            'resilience-proxy; error=http_response_timeout; details="slow: no response in 0.2s"')
        assert 0.2 <= loop.time() - started < 2


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    # An error answer the classifier reads whole to judge it: the read stalls, the client is still cut short.
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
])
async def test_a_body_that_stalls_cuts_the_client_short_after_the_timeout(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, head: bytes
) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(head + b"x" * 400)
        await writer.drain()
        await asyncio.sleep(5)

    async with RawUpstream(stall) as upstream:
        # The same timeout bounds the head, which comes at once: generous, so that a busy machine does
        # not turn the stalled body into a 504 for a late head.
        sidecar = await start_sidecar({"slow": {"url": upstream.url, "prefix": "/slow", "timeout": "1s"}})
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with http.get(base_url(sidecar) + "/slow/x") as response:
            assert response.status == int(head[9:12])
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert 1 <= loop.time() - started < 5


async def test_body_over_the_limit_is_a_413_without_reaching_the_upstream(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar
) -> None:
    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async with RawUpstream(count) as upstream:
        sidecar = await start_sidecar({"small": {"url": upstream.url, "prefix": "/small", "max_request_body": "1KiB"}})
        async with http.post(base_url(sidecar) + "/small/x", data=b"a" * 2000) as response:
            assert_proxy_error(response, 413, "http_request_error", await response.json())
        assert upstream.connections == 0

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"b" * 500

        async with http.post(base_url(sidecar) + "/small/x", data=chunked()) as response:
            assert_proxy_error(response, 413, "http_request_error", await response.json())


async def test_upstream_hop_by_hop_response_headers_are_removed(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: X-Internal\r\nX-Internal: 1\r\n"
                     b"Keep-Alive: timeout=1\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
                     b"X-Twilio-Request: kept\r\n\r\nok")
        await writer.drain()

    async with RawUpstream(answer) as upstream:
        sidecar = await start_sidecar({"raw": {"url": upstream.url, "prefix": "/raw"}})
        async with http.get(base_url(sidecar) + "/raw/x") as response:
            assert response.status == 201
            assert await response.read() == b"ok"
            names = {name.lower() for name in response.headers}
    assert "x-twilio-request" in names
    assert not names & {"x-internal", "keep-alive", "proxy-authenticate", "trailer", "upgrade"}


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n", 405),
    (b"GET /elsewhere HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n", 404),
])
async def test_never_an_open_proxy(start_sidecar: StartSidecar, request_bytes: bytes, status: int) -> None:
    hits = 0

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hits
        hits += 1

    async with RawUpstream(count) as upstream:
        sidecar = await start_sidecar({"api": {"url": upstream.url, "prefix": "/api"}})
        response = await send_raw(URL(base_url(sidecar)).port, request_bytes)
    assert response.status == status
    assert response.header("Proxy-Status").startswith("resilience-proxy; error=")
    assert json.loads(response.body)["status"] == status
    assert hits == 0


async def test_no_connection_in_time_is_a_504_connection_timeout(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar
) -> None:
    import socket

    # A listener that never accepts, with its accept queue already full: the kernel drops
    # further SYNs, so a connect hangs exactly like one to an unreachable host.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        sidecar = await start_sidecar({"blackhole": {"url": f"http://127.0.0.1:{port}", "prefix": "/bh",
                                                     "connect_timeout": "300ms", "timeout": "5s"}})
        async with http.get(base_url(sidecar) + "/bh/x") as response:
            body = await response.json()
        assert_proxy_error(response, 504, "connection_timeout", body)
        assert body["message"] == "blackhole: no connection in 0.3s"
    finally:
        for sock in (listener, *fillers):
            sock.close()
