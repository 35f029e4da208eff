"""Values the sidecar reads from upstream answers and client requests, at their worst: odd digits,
bytes that are not ASCII, JSON nested past Python's recursion limit. Each is ignored or relayed
as it came; none becomes the sidecar's own 500."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import StartSidecar, admin_url, base_url
from tests.rawhttp import RawUpstream, read_request_head, send_raw

FAST = {"initial": "50ms", "multiplier": 1, "max": "50ms", "jitter": 0}
DEEP_JSON = b"[" * 5000 + b"]" * 5000


def retrying(url: str, **retry: Any) -> dict[str, Any]:
    return {"api": {"url": url, "prefix": "/api", "breaker": False,
                    "retry": {"attempts": 1, "backoff": FAST, "on": [429, "rate_limited"], **retry}}}


@pytest.mark.parametrize("value", ["²", "٣", "Wed, ٢١ Oct 2026 07:28:00 GMT", "1.5"])
async def test_an_upstream_retry_after_that_is_not_ascii_digits_is_ignored(
        value: str, http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted) -> None:  # type: ignore[no-untyped-def]
    """A 429 whose Retry-After is unreadable is retried after the backoff, as if it had none
    (read as 3 s, '٣' would be over retry_after_max and relayed at once)."""
    upstream, url = scripted
    upstream.status, upstream.headers = 429, {"Retry-After": value}
    sidecar = await start_sidecar(retrying(url, retry_after_max="1s"))
    async with http.get(base_url(sidecar) + "/api/x") as response:
        assert (response.status, upstream.hits) == (429, 2)
        assert response.headers["X-Resilience-Attempts"] == "2"
        assert response.headers["Retry-After"] == value, "the upstream's answer is relayed as it came"


async def test_a_basic_authorization_that_is_not_ascii_spends_no_bucket_and_is_forwarded(
        start_sidecar: StartSidecar, scripted) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    limits = [{"name": "per-account", "key": "basic_auth_user", "limit": 5, "per": "1h", "on_missing_key": "skip"}]
    sidecar = await start_sidecar({"api": {"url": url, "prefix": "/api", "rate_limits": limits}})
    port = int(base_url(sidecar).rsplit(":", 1)[1])
    answer = await send_raw(port, "GET /api/x HTTP/1.1\r\nHost: a\r\nAuthorization: Basic ²é\r\n"
                                  "Connection: close\r\n\r\n".encode())
    assert (answer.status, upstream.hits) == (200, 1)


async def test_a_json_body_nested_past_the_recursion_limit_is_forwarded_unread(
        http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted) -> None:  # type: ignore[no-untyped-def]
    """Routing by a body field and ``idempotent_when_body_has`` parse small JSON bodies."""
    upstream, url = scripted
    routes = [{"name": "keyed", "methods": ["POST"], "path": "/k", "body": {"kind": "a"}},
              {"name": "events", "path": "/events"}]
    sidecar = await start_sidecar({"api": {"url": url, "prefix": "/api", "routes": routes,
                                           "retry": {"idempotent_when_body_has": "id", "backoff": FAST}}})
    for path in ("/api/k", "/api/events"):
        async with http.post(base_url(sidecar) + path, data=DEEP_JSON,
                             headers={"Content-Type": "application/json"}) as response:
            assert response.status == 200, path
    assert upstream.hits == 2


async def test_an_upstream_403_with_json_nested_past_the_recursion_limit_is_relayed(
        http: aiohttp.ClientSession, start_sidecar: StartSidecar, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    """A 403 body is read to tell Google's throttling apart (and a retried 409's to tell a duplicate)."""
    async def forbidden(request: web.Request) -> web.Response:
        return web.Response(status=403, body=DEEP_JSON, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forbidden)
    server = await aiohttp_server(app)
    sidecar = await start_sidecar(retrying(f"http://127.0.0.1:{server.port}"))
    async with http.get(base_url(sidecar) + "/api/x") as response:
        assert response.status == 403 and await response.read() == DEEP_JSON


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\nX-Token SECRETSESSION\r\n\r\n",
                                  b"HTTP/1.1 SECRETSESSION\r\n\r\n"])
async def test_a_broken_upstream_answer_is_a_502_that_quotes_none_of_its_bytes(
        head: bytes, http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    """The sidecar's message goes to the client, the logs, Sentry and Slack: the parser's reason, never the line."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(head)
        await writer.drain()

    async with RawUpstream(answer) as upstream:
        sidecar = await start_sidecar({"api": {"url": upstream.url, "prefix": "/api"}})
        async with http.get(base_url(sidecar) + "/api/x") as response:
            body = await response.json()
    assert (response.status, body["code"]) == (502, "http_protocol_error")
    assert body["message"].startswith("api: invalid HTTP response (") and "SECRETSESSION" not in str(body)
    assert "SECRETSESSION" not in response.headers["Proxy-Status"]


async def test_an_upstream_header_with_a_control_character_is_left_out_and_the_answer_relayed(
        http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    """A 201 for a message Twilio sent must reach the app (a 500 would invite a second SMS)."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nSet-Cookie: sid=SECRETSESSION\x01\r\nX-Kept: yes\r\n"
                     b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()

    async with RawUpstream(answer) as upstream:
        sidecar = await start_sidecar({"api": {"url": upstream.url, "prefix": "/api"}})
        async with http.post(base_url(sidecar) + "/api/x", data=b"To=x") as response:
            assert (response.status, await response.read()) == (201, b"{}")
            assert response.headers["X-Kept"] == "yes" and "Set-Cookie" not in response.headers


@pytest.mark.parametrize(("body", "status"), [(DEEP_JSON, 400), (b"\xff\xfe", 400), (b"[1, 2]", 200)],
                         ids=["nested-5000-deep", "not-utf8", "not-an-object"])
async def test_an_admin_body_that_is_not_json_is_a_400_never_a_500(
        body: bytes, status: int, http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url, "prefix": "/api"}}, admin={"listen": "127.0.0.1:0", "token": "t"})
    async with http.post(admin_url(sidecar) + "/admin/breakers/api/default/force-open", data=body,
                         headers={"Authorization": "Bearer t", "Content-Type": "application/json"}) as response:
        assert response.status == status
