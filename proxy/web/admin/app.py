"""The admin listener: liveness, readiness, metrics, breakers, the config and the status page, on its own address.

Kept off the data port so that nothing an application (or an attacker reaching the data
port) sends can read metrics or change breaker state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from proxy.config.running import ReloadAttempt, RunningConfig
from proxy.observe.exposition import exposition
from proxy.state.base import BreakerStore
from proxy.state.webhooks import WebhookStore
from proxy.web.admin.breakers import add_breaker_routes
from proxy.web.admin.config import add_config_routes
from proxy.web.admin.page import add_page_routes
from proxy.web.admin.status import StatusService, add_status_routes
from proxy.web.admin.webhooks import add_webhook_routes


@dataclass
class Health:
    """What ``/readyz`` reports: ready once serving, not ready again while draining."""

    serving: bool = False
    draining: bool = False
    backend_required: bool = False
    backend_up: bool = True

    @property
    def ready(self) -> bool:
        return self.serving and not self.draining and (self.backend_up or not self.backend_required)

    @property
    def reason(self) -> str:
        if self.draining:
            return "draining"
        if not self.serving:
            return "starting"
        return "ready" if self.ready else "state backend unreachable"


def admin_app(health: Health, running: Callable[[], RunningConfig], breakers: BreakerStore,
              reload: Callable[[str], Awaitable[ReloadAttempt]], before_scrape: Callable[[], None] = lambda: None,
              webhooks: WebhookStore | None = None, emit: Callable[[object], None] = lambda _: None,
              status: StatusService | None = None) -> web.Application:
    """``running`` returns the config that runs now (it changes on reload); ``before_scrape`` brings
    sampled gauges up to date, so the answering process reports its state of now. ``webhooks`` is the
    inbound-webhook store (None: no webhook configured); ``emit`` puts admin actions on the event bus;
    ``status`` serves the status document and its stream (the page at ``/`` reads them)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response({"status": health.reason}, status=200 if health.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        before_scrape()
        body, content_type = exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_breaker_routes(app, lambda: running().config, breakers)
    add_config_routes(app, running, reload)
    add_webhook_routes(app, lambda: running().config, webhooks, emit)
    if status is not None:
        add_status_routes(app, status)
        add_page_routes(app)
    return app
