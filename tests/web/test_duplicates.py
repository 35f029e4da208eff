"""A retried id-keyed insert answered 409: the created resource is fetched, or the 409 relayed as it came."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from proxy.web.duplicates import resource_url
from tests.conftest import StartSidecar, base_url

CONFLICT = {"error": {"code": 409, "message": "The requested identifier already exists.",
                      "errors": [{"domain": "global", "reason": "duplicate"}]}}


def test_resource_url_appends_the_quoted_key_before_the_query() -> None:
    assert resource_url("http://h/cal/c%40x/events?alt=json", "ab c") == "http://h/cal/c%40x/events/ab%20c?alt=json"
    assert resource_url("http://h/events/", "abc") == "http://h/events/abc"


async def sidecar_for(aiohttp_server: Any, start_sidecar: StartSidecar, get_status: int,
                      conflict: dict[str, Any] = CONFLICT) -> tuple[str, list[Any]]:
    seen: list[Any] = []

    async def insert(request: web.Request) -> web.Response:
        seen.append(("POST", await request.json()))
        if len(seen) == 1:
            return web.json_response({"error": {"code": 503, "message": "Backend Error"}}, status=503)
        return web.json_response(conflict, status=409)

    async def get(request: web.Request) -> web.Response:
        seen.append(("GET", request.path_qs, request.headers.get("Authorization"), request.headers.get("Content-Length"),
                     await request.read()))
        return web.json_response({"id": request.match_info["id"], "summary": "created"}, status=get_status)

    app = web.Application()
    app.router.add_post("/events", insert)
    app.router.add_get("/events/{id}", get)
    server = await aiohttp_server(app)
    sidecar = await start_sidecar({"g": {
        "url": f"http://127.0.0.1:{server.port}", "prefix": "/g", "breaker": False,
        "retry": {"attempts": 2, "on": [503], "backoff": {"initial": "10ms", "max": "10ms"},
                  "idempotent_when_body_has": "id", "on_duplicate": "fetch"}}})
    return base_url(sidecar), seen


async def test_the_created_resource_is_fetched_with_the_clients_credentials(
        aiohttp_server: Any, start_sidecar: StartSidecar, http: aiohttp.ClientSession) -> None:
    url, seen = await sidecar_for(aiohttp_server, start_sidecar, 200)
    async with http.post(f"{url}/g/events?alt=json", json={"id": "abc"}, headers={"Authorization": "Bearer t"}) as r:
        assert r.status == 200 and await r.json() == {"id": "abc", "summary": "created"}
        assert (r.headers["X-Resilience-Duplicate"], r.headers["X-Resilience-Attempts"]) == ("fetched", "2")
    assert seen[2] == ("GET", "/events/abc?alt=json", "Bearer t", None, b"")


async def test_when_the_lookup_fails_the_409_goes_back_unchanged(
        aiohttp_server: Any, start_sidecar: StartSidecar, http: aiohttp.ClientSession) -> None:
    url, seen = await sidecar_for(aiohttp_server, start_sidecar, 500)
    async with http.post(f"{url}/g/events", json={"id": "abc"}) as r:
        assert r.status == 409 and await r.json() == CONFLICT and "X-Resilience-Duplicate" not in r.headers
    assert [s[0] for s in seen] == ["POST", "POST", "GET"]


async def test_a_409_for_another_reason_is_relayed_without_a_lookup(
        aiohttp_server: Any, start_sidecar: StartSidecar, http: aiohttp.ClientSession) -> None:
    other = {"error": {"code": 409, "message": "Conflict", "errors": [{"domain": "global", "reason": "conflict"}]}}
    url, seen = await sidecar_for(aiohttp_server, start_sidecar, 200, other)
    async with http.post(f"{url}/g/events", json={"id": "abc"}) as r:
        assert r.status == 409 and await r.json() == other
    assert [s[0] for s in seen] == ["POST", "POST"]
