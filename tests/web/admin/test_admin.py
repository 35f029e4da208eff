"""The admin listener: liveness, readiness, metrics; and nothing of it on the data port."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.conftest import StartSidecar, admin_url, base_url
from tests.metrics_text import sample_value


async def ok(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def test_health_and_readiness(http: aiohttp.ClientSession, start_sidecar: StartSidecar, aiohttp_server) -> None:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    server = await aiohttp_server(app)
    sidecar = await start_sidecar({"api": {"url": f"http://127.0.0.1:{server.port}", "prefix": "/api"}})
    async with http.get(admin_url(sidecar) + "/healthz") as response:
        assert response.status == 200
    async with http.get(admin_url(sidecar) + "/readyz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ready"})
    async with http.get(base_url(sidecar) + "/metrics") as response:
        assert response.status == 404, "admin paths must not be served on the data port"

    await sidecar.drain()
    async with http.get(admin_url(sidecar) + "/readyz") as response:
        assert (response.status, await response.json()) == (503, {"status": "draining"})
    async with http.get(admin_url(sidecar) + "/healthz") as response:
        assert response.status == 200


async def test_metrics_count_requests_and_latency_per_upstream(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, aiohttp_server
) -> None:  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    server = await aiohttp_server(app)
    sidecar = await start_sidecar({"metered": {"url": f"http://127.0.0.1:{server.port}", "prefix": "/metered"}})

    async def scrape() -> str:
        async with http.get(admin_url(sidecar) + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            return await response.text()

    before = await scrape()
    for _ in range(7):
        async with http.get(base_url(sidecar) + "/metered/x") as response:
            assert response.status == 200
    async with http.post(base_url(sidecar) + "/metered/x") as response:
        assert response.status == 405
    async with http.get(base_url(sidecar) + "/unrouted") as response:
        assert response.status == 404
    after = await scrape()

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    assert delta("resilience_proxy_requests_total", upstream="metered", route="default", method="GET",
                 status_class="2xx") == 7
    assert delta("resilience_proxy_requests_total", upstream="metered", route="default", method="POST",
                 status_class="4xx") == 1
    assert delta("resilience_proxy_request_duration_seconds_count", upstream="metered", route="default") == 8
    assert delta("resilience_proxy_rejected_requests_total", reason="destination_not_found") == 1
