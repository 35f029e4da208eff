"""The admin listener: liveness, readiness, metrics and breakers, on its own address.

Kept off the data port so that nothing an application (or an attacker reaching the data
port) sends can read metrics or change breaker state.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.config.model import Config
from proxy.observe.metrics import exposition
from proxy.state.base import BreakerStore
from proxy.web.breakers_admin import add_breaker_routes


@dataclass
class Health:
    """What ``/readyz`` reports: ready once serving, not ready again while draining."""

    serving: bool = False
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.serving and not self.draining


def admin_app(health: Health, config: Config, breakers: BreakerStore) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        if health.ready:
            return web.json_response({"status": "ready"})
        reason = "draining" if health.draining else "starting"
        return web.json_response({"status": reason}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_breaker_routes(app, config, breakers)
    return app
