"""A loopback app that receives webhook deliveries, and helpers shared by the delivery tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.state.webhooks import InboundEvent
from tests.conftest import free_port

DAY, WEEK = 86_400.0, 7 * 86_400.0


class App:
    """The app behind the sidecar on a fixed loopback port, which a test can stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 200
        self.headers: dict[str, str] = {}
        self.hold: asyncio.Event | None = None
        """While set to an unset Event, requests wait for it (a slow app)."""
        self.received: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/twilio/status"

    async def handle(self, request: web.Request) -> web.Response:
        seen = {"method": request.method, "query": request.query_string, "body": await request.read(),
                "headers": dict(request.headers)}
        self.received.append(seen)
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=self.status, headers=self.headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def ids(self) -> list[str]:
        """The X-Webhook-Id of every delivery received, in order."""
        return [r["headers"]["X-Webhook-Id"] for r in self.received]


def inbound(key: str, body: bytes = b"MessageSid=SM1&MessageStatus=delivered") -> InboundEvent:
    return InboundEvent(webhook="twilio_status", dedupe_key=key, method="POST", query="x=1",
                        headers=(("Content-Type", "application/x-www-form-urlencoded"), ("I-Twilio-Idempotency-Token", key)),
                        body=body, received_at=time.time(), org="AC1", event_type="delivered", verified="twilio")


async def until(check: Callable[[], Awaitable[Any] | Any], deadline: float = 30.0) -> Any:
    """Poll ``check`` (a function or a coroutine function) until it returns something truthy; fail after
    ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
