"""The route in every access line: it is the unit breakers, limits and metrics are counted in."""

from __future__ import annotations

import io
import json

import aiohttp
from aiohttp import web

from proxy.observe.access import AccessLog
from tests.conftest import StartSidecar, base_url


async def test_every_access_line_names_its_route_or_null_before_one_was_chosen(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, aiohttp_server  # type: ignore[no-untyped-def]
) -> None:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"error": "down"}, status=503 if request.path == "/sms" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    stream = io.StringIO()
    sidecar = await start_sidecar(
        {"api": {"url": f"http://127.0.0.1:{server.port}", "prefix": "/api", "max_request_body": 1024,
                 "routes": [{"name": "sms", "path": "/sms",
                             "breaker": {"consecutive_failures": 1, "open_for": "30s"}}]}},
        access_log=AccessLog(stream))
    calls = [("GET", "/api/sms", 503), ("GET", "/api/sms", 503),  # the upstream's 503, then the open breaker's
             ("GET", "/api/other", 200), ("GET", "/nowhere", 404), ("POST", "/api/other", 413)]
    for method, path, status in calls:
        async with http.request(method, base_url(sidecar) + path, data=b"x" * 2048 if method == "POST" else None
                                ) as response:
            assert response.status == status
    sidecar.dataplane.access_log.flush()
    lines = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert [(line["route"], line["status"]) for line in lines] == [
        ("sms", 503), ("sms", 503), ("default", 200), (None, 404), (None, 413)]
    assert lines[1]["error"] == "destination_unavailable" and lines[1]["attempts"] == 0
