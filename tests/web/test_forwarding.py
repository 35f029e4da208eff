"""Round trips through a running sidecar to real aiohttp upstreams on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.conftest import StartSidecar, base_url
from tests.rawhttp import send_raw


async def echo(request: web.Request) -> web.StreamResponse:
    """Tell the client exactly what arrived: method, raw target, headers, body."""
    body = await request.read()
    status = int(request.headers.get("X-Want-Status", "200"))
    if request.method == "HEAD" or status in (204, 304):
        return web.Response(status=status, headers={"X-Echo": "1"})
    return web.json_response(
        {"method": request.method, "target": request.raw_path, "headers": list(request.headers.items()),
         "body": body.decode("latin-1")},
        status=status, headers={"Set-Cookie": "a=1", "X-Echo": "1"},
    )


@pytest.fixture
async def echo_url(aiohttp_server) -> str:  # type: ignore[no-untyped-def]
    app = web.Application(client_max_size=2**30)
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def sidecar_url(start_sidecar: StartSidecar, echo_url: str) -> str:
    sidecar = await start_sidecar({"twilio": {"url": echo_url + "/base", "prefix": "/twilio"}})
    return base_url(sidecar)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("status", [200, 201, 400, 404, 500, 503])
async def test_methods_and_statuses_round_trip_unchanged(http: aiohttp.ClientSession, sidecar_url: str,
                                                         method: str, status: int) -> None:
    async with http.request(method, sidecar_url + "/twilio/x", data=b"payload",
                            headers={"X-Want-Status": str(status)}) as response:
        assert response.status == status
        assert "Proxy-Status" not in response.headers
        seen = await response.json()
    assert (seen["method"], seen["target"], seen["body"]) == (method, "/base/x", "payload")


@pytest.mark.parametrize("status", [204, 304])
async def test_bodyless_statuses(http: aiohttp.ClientSession, sidecar_url: str, status: int) -> None:
    async with http.get(sidecar_url + "/twilio/x", headers={"X-Want-Status": str(status)}) as response:
        assert response.status == status
        assert response.headers["X-Echo"] == "1"
        assert await response.read() == b""


async def test_head(http: aiohttp.ClientSession, sidecar_url: str) -> None:
    async with http.head(sidecar_url + "/twilio/x") as response:
        assert response.status == 200
        assert response.headers["X-Echo"] == "1"


async def test_path_and_query_with_reserved_characters_are_forwarded_byte_for_byte(
    http: aiohttp.ClientSession, sidecar_url: str
) -> None:
    target = "/calendars/team%20cal%40example.com/events?q=a+b&to=%2B15550001111&t=2026-12-01T10%3A00%3A00Z&e=&x=%2F"
    async with http.get(URL(sidecar_url + "/twilio" + target, encoded=True)) as response:
        assert (await response.json())["target"] == "/base" + target


async def test_empty_and_chunked_bodies(http: aiohttp.ClientSession, sidecar_url: str) -> None:
    async with http.post(sidecar_url + "/twilio/x") as response:
        seen = await response.json()
    assert seen["body"] == ""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(50):
            yield f"chunk{i};".encode() * 100

    async with http.post(sidecar_url + "/twilio/upload", data=chunks()) as response:
        seen = await response.json()
    assert seen["body"] == "".join(f"chunk{i};" * 100 for i in range(50))
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["transfer-encoding"] == "chunked"


async def test_content_length_upload_keeps_its_length(http: aiohttp.ClientSession, sidecar_url: str) -> None:
    async with http.post(sidecar_url + "/twilio/x", data=b"a" * 100_000) as response:
        seen = await response.json()
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["content-length"] == "100000"
    assert len(seen["body"]) == 100_000


async def test_host_is_the_upstreams_and_sidecar_only_headers_stay_home(
    http: aiohttp.ClientSession, sidecar_url: str, echo_url: str
) -> None:
    sent = {
        "Authorization": "Basic QUMxMjM6c2VjcmV0", "X-Org-Id": "acme", "X-Forwarded-For": "10.1.2.3",
        "Forwarded": "for=10.1.2.3", "X-Real-IP": "10.1.2.3", "Cookie": "c=1", "X-Custom": "kept",
    }
    async with http.get(sidecar_url + "/twilio/x", headers=sent) as response:
        seen = {k.lower(): v for k, v in (await response.json())["headers"]}
    assert seen["host"] == URL(echo_url).raw_authority
    assert seen["authorization"] == sent["Authorization"]
    assert seen["cookie"] == "c=1"
    assert seen["x-custom"] == "kept"
    for private in ("x-org-id", "x-forwarded-for", "forwarded", "x-real-ip"):
        assert private not in seen


async def test_forwarded_headers_only_when_configured(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, echo_url: str
) -> None:
    sidecar = await start_sidecar({"api": {"url": echo_url, "prefix": "/api", "forwarded_headers": True}})
    async with http.get(base_url(sidecar) + "/api/x", headers={"X-Forwarded-For": "10.1.2.3"}) as response:
        seen = {k.lower(): v for k, v in (await response.json())["headers"]}
    assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"


async def test_hop_by_hop_request_headers_are_removed(sidecar_url: str) -> None:
    port = URL(sidecar_url).port
    request = (
        b"POST /twilio/x HTTP/1.1\r\nHost: sidecar\r\nConnection: close, X-Conn-Listed\r\nX-Conn-Listed: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Authorization: Basic eA==\r\n"
        b"Upgrade: h2c\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nhi"
    )
    response = await send_raw(port, request)
    seen = {k.lower() for k, _ in json.loads(response.body)["headers"]}
    assert "x-kept" in seen
    assert not seen & {"x-conn-listed", "keep-alive", "te", "trailer", "proxy-authorization", "upgrade"}


async def test_compressed_bodies_stay_compressed(http: aiohttp.ClientSession, start_sidecar: StartSidecar,
                                                 aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    payload = gzip.compress(b'{"calendars": {}}' * 100)

    async def gzipped(_: web.Request) -> web.Response:
        return web.Response(body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", gzipped)
    server = await aiohttp_server(app)
    sidecar = await start_sidecar({"g": {"url": f"http://127.0.0.1:{server.port}", "prefix": "/g"}})
    async with http.get(base_url(sidecar) + "/g/freeBusy", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(payload))
        assert await response.read() == payload


async def test_response_headers_and_duplicates_reach_the_client(http: aiohttp.ClientSession, sidecar_url: str) -> None:
    async with http.get(sidecar_url + "/twilio/x") as response:
        assert response.headers.getall("Set-Cookie") == ["a=1"]
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_upstream_gets_no_header_the_client_did_not_send(start_sidecar: StartSidecar, echo_url: str,
                                                                   method: str) -> None:
    """The HTTP client adds User-Agent, Accept, Accept-Encoding and, for a body, Content-Type unless
    told not to: the third party must see the app's request, not the sidecar's library."""
    sidecar = await start_sidecar({"api": {"url": echo_url, "prefix": "/api"}})
    body = b"To=%2B15550001111" if method == "POST" else b""
    request = (f"{method} /api/x HTTP/1.1\r\nHost: app\r\nX-App: 1\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    response = await send_raw(sidecar.data_address.port, request)
    seen = json.loads(response.body)
    names = sorted(name.lower() for name, _ in seen["headers"])
    assert names == ["content-length", "host", "x-app"], names
    assert seen["body"] == body.decode()


async def test_request_ids_are_32_hex_digits_and_distinct(http: aiohttp.ClientSession, sidecar_url: str) -> None:
    generated = set()
    for _ in range(50):
        async with http.get(sidecar_url + "/twilio/x") as response:
            generated.add(response.headers["X-Request-Id"])
    assert len(generated) == 50
    assert all(len(rid) == 32 and int(rid, 16) >= 0 and rid == rid.lower() for rid in generated)


async def test_request_id_is_generated_or_kept(http: aiohttp.ClientSession, sidecar_url: str) -> None:
    async with http.get(sidecar_url + "/twilio/x") as response:
        generated = response.headers["X-Request-Id"]
    assert len(generated) == 32
    async with http.get(sidecar_url + "/twilio/x", headers={"X-Request-Id": "req-42"}) as response:
        assert response.headers["X-Request-Id"] == "req-42"


async def test_expect_100_continue_is_answered_before_the_upload(sidecar_url: str) -> None:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", URL(sidecar_url).port)
    writer.write(b"POST /twilio/x HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"hello")
    final = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert final.startswith(b"HTTP/1.1 200")
    body = json.loads(final.partition(b"\r\n\r\n")[2])
    assert body["body"] == "hello"
    assert "expect" not in {k.lower() for k, _ in body["headers"]}


async def test_connections_to_the_upstream_are_pooled_and_reused(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, aiohttp_server
) -> None:  # type: ignore[no-untyped-def]
    peers: list[tuple[str, int]] = []

    async def record(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", record)
    server = await aiohttp_server(app)
    sidecar = await start_sidecar({"api": {"url": f"http://127.0.0.1:{server.port}", "prefix": "/api"}})
    for _ in range(5):
        async with aiohttp.ClientSession() as fresh_client:  # a new client connection every time
            async with fresh_client.get(base_url(sidecar) + "/api/x") as response:
                assert await response.text() == "ok"
    assert len(set(peers)) == 1, "the sidecar should reuse one keep-alive connection to the upstream"


async def test_access_log_has_no_query_string_or_credentials(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, echo_url: str
) -> None:
    import io

    from proxy.observe.access import AccessLog

    stream = io.StringIO()
    sidecar = await start_sidecar({"google": {"url": echo_url, "prefix": "/google"}}, access_log=AccessLog(stream))
    headers = {"Authorization": "Bearer ya29.secret-token", "Cookie": "session=secret-cookie", "X-Request-Id": "r-1"}
    target = base_url(sidecar) + "/google/calendars/c1/events?key=AIzaSecretKey"
    async with http.get(target, headers=headers) as response:
        assert response.status == 200
    sidecar.dataplane.access_log.flush()
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert {k: line[k] for k in ("msg", "request_id", "upstream", "method", "path", "status", "error")} == {
        "msg": "request", "request_id": "r-1", "upstream": "google", "method": "GET",
        "path": "/google/calendars/c1/events", "status": 200, "error": None}
    assert line["duration_ms"] > 0 and line["bytes_out"] > 0
    for secret in ("AIzaSecretKey", "ya29.secret-token", "secret-cookie"):
        assert secret not in stream.getvalue()


async def test_access_log_masks_emails_and_phone_numbers_in_paths(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, echo_url: str
) -> None:
    import io

    from proxy.observe.access import AccessLog

    stream = io.StringIO()
    sidecar = await start_sidecar({"google": {"url": echo_url, "prefix": "/google"}}, access_log=AccessLog(stream))
    for path in ("/google/calendars/alice%40example.com/events", "/google/users/+15551234567/calendars"):
        async with http.get(base_url(sidecar) + path) as response:
            assert response.status == 200
    sidecar.dataplane.access_log.flush()
    paths = [json.loads(text)["path"] for text in stream.getvalue().splitlines()]
    assert paths == ["/google/calendars/[email]/events", "/google/users/[phone]/calendars"]


async def test_access_lines_are_batched_and_flushed_soon(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, echo_url: str
) -> None:
    import asyncio
    import io

    from proxy.observe.access import AccessLog

    stream = io.StringIO()
    sidecar = await start_sidecar({"api": {"url": echo_url, "prefix": "/api"}},
                                  access_log=AccessLog(stream, interval=0.05))
    for _ in range(3):
        async with http.get(base_url(sidecar) + "/api/x") as response:
            assert response.status == 200
    for _ in range(100):  # written within the flush interval, without anyone calling flush()
        if stream.getvalue().count("\n") == 3:
            break
        await asyncio.sleep(0.01)
    assert [json.loads(text)["status"] for text in stream.getvalue().splitlines()] == [200, 200, 200]


async def test_a_client_that_goes_away_is_no_error(
    start_sidecar: StartSidecar, aiohttp_server, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import logging

    answered = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        answered.set()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/{tail:.*}", slow)
    server = await aiohttp_server(app)
    sidecar = await start_sidecar({"api": {"url": f"http://127.0.0.1:{server.port}", "prefix": "/api"}})
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.data_address.port)
    writer.write(b"GET /api/x HTTP/1.1\r\nHost: s\r\n\r\n")
    await writer.drain()
    writer.close()  # gone before the upstream answers
    await asyncio.wait_for(answered.wait(), 5)
    await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert sidecar.dataplane.in_flight == 0
