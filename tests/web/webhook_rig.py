"""What the webhook tests share: a recording app, Twilio signatures made by RequestValidator, a listener on
loopback, and a client that posts once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from proxy.config.webhooks import Webhook
from proxy.state.webhooks import WebhookStore
from proxy.web.webhooks import WebhookListener

TOKEN = "twilio-auth-token-0123456789abcd"
PUBLIC = "https://app.example.com/hooks/twilio/status"
PHONE = "+15005550006"
TEXT = "meet me at the usual place"
STATUS = [("AccountSid", "AC1"), ("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", PHONE),
          ("Body", TEXT)]
TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>hi</Message></Response>'


@dataclass
class App:
    """The app behind the sidecar: records every delivery, answers as scripted."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    delay: float = 0.0
    gate: asyncio.Event | None = None
    """When set, every answer waits for it."""
    received: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.method, request.path_qs, dict(request.headers), await request.read()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        return web.Response(status=self.status, body=self.body, headers={"Content-Type": self.content_type})


def signed(params: list[tuple[str, str]], url: str = PUBLIC, token: str = TOKEN) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for name, value in params:
        values.setdefault(name, []).append(value)

    class Multi(dict):  # what a web framework hands RequestValidator
        def getall(self, name: str) -> list[str]:
            return self[name]

    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, Multi(values)),
            "Content-Type": "application/x-www-form-urlencoded"}


async def post(url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers or {}) as response:
        return response.status, dict(response.headers), await response.read()




@asynccontextmanager
async def serving(hooks: Callable[[], Sequence[Webhook]], store: WebhookStore,
                  emit: Callable[[object], None]) -> AsyncIterator[str]:
    """A listener on a free loopback port through the runner the sidecar binds (its logging, not a test
    server's); yields its URL."""
    listener = WebhookListener(hooks, store, emit)
    await listener.start()
    await listener.runner.setup()
    try:
        site = web.TCPSite(listener.runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{listener.runner.addresses[0][1]}"
    finally:
        await listener.runner.cleanup()
        await listener.close()


@asynccontextmanager
async def app_server(app: App) -> AsyncIterator[str]:
    """``app`` on a free loopback port; yields its URL."""
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", app.handle)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
