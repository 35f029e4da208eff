"""The status document on the admin port, once (``GET /admin/status``) or live (``GET /admin/stream``).

    GET /admin/status   the document (:mod:`proxy.observe.status`) as JSON
    GET /admin/stream   Server-Sent Events: ``snapshot`` (the document) on connect, then ``transition``
                        as soon as a breaker changes, and ``stats`` (the document without the
                        transitions) about every second

Reads, open on the admin port like ``GET /admin/breakers``. A loop runs while the sidecar does,
off the request path: four times a second it closes the traffic window's current second and
looks at the local breaker views for transitions other replicas made (no I/O); while a stream is
open it also builds the stats once a second, from a fresh read of the shared state (one round
trip for every breaker) and the webhook queues, whatever the number of streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy.config.model import BreakerId
from proxy.config.running import RunningConfig
from proxy.observe.status import QueueReport, StatusFeed, describe_transition, status_document
from proxy.observe.transitions import Seen
from proxy.state.base import BackendUnavailable, BreakerStore, LimitStore
from proxy.state.webhooks import WebhookStore
from proxy.web.admin.stream import EventStream, sse

if TYPE_CHECKING:  # the webhook model loads only with a policy file that declares webhooks
    from proxy.config.webhooks import Webhook

log = logging.getLogger("resilience_proxy.admin")

TICK = 0.25
"""Seconds between looks at the breaker views (and closings of the traffic window's second)."""
STATS_EVERY = 1.0
"""Seconds between two stats on the stream."""
WEBHOOK_STATS_TIMEOUT = 1.0


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


class StatusService:
    """Builds the document and feeds the stream; started and closed with the sidecar."""

    def __init__(self, feed: StatusFeed, running: Callable[[], RunningConfig], breakers: BreakerStore,
                 limits: LimitStore, webhooks: WebhookStore | None) -> None:
        self.feed = feed
        self.stream = EventStream()
        self._running, self._breakers, self._limits, self._webhooks = running, breakers, limits, webhooks
        self._clock = feed.clock
        self._told: list[Seen] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        feed.tell(self._transitioned)

    def _transitioned(self, seen: Seen) -> None:
        """From the bus, on the request path that made the transition: queue it and wake the loop."""
        self._told.append(seen)
        self._wake.set()

    async def document(self, transitions: bool = True) -> dict[str, Any]:
        """The status document now: breakers read fresh from the store, webhook queues, this process's traffic."""
        running = self._running()
        config = running.config
        keys = [BreakerId.of(u, r).key for u, r in config.breakers()]
        views = {view.key: view for view in await self._breakers.views(keys)}
        self._look()  # the fresh read may have moved a view: its transition is told before the document shows it
        self.feed.traffic.advance(self._clock.monotonic())
        return status_document(running, views, self.feed.traffic,
                               self.feed.transitions.recent() if transitions else None,
                               self._breakers.backend_up and self._limits.backend_up,
                               await self._queues(config.webhooks), self._clock.now(), self._clock.monotonic(),
                               os.getpid())

    async def _queues(self, webhooks: Sequence[Webhook]) -> list[QueueReport] | None:
        if self._webhooks is None:
            return None
        reports = []
        for webhook in webhooks:
            try:
                async with asyncio.timeout(WEBHOOK_STATS_TIMEOUT):
                    reports.append(QueueReport(webhook.name, await self._webhooks.stats(webhook.name)))
            except (BackendUnavailable, TimeoutError):
                reports.append(QueueReport(webhook.name, None))
        return reports

    async def snapshot(self) -> bytes:
        """The stream's first message: the whole document, transitions included."""
        return sse("snapshot", _json(await self.document()))

    # -- the sidecar's component ------------------------------------------------------------------

    async def start(self) -> None:
        self._look()  # learn every breaker's state now, so that the first change after start is told
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        self.stream.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        next_stats = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self._wake.wait()
            self._wake.clear()
            try:
                next_stats = await self._tick(next_stats)
            except Exception:
                log.exception("updating the status stream failed")

    async def _tick(self, next_stats: float) -> float:
        """One look; returns when the next stats are due."""
        now = self._clock.monotonic()
        self.feed.traffic.advance(now)
        if self._look():
            next_stats = now  # the new state in full at once, probes and all
        if self.stream.clients and now >= next_stats:
            self.stream.publish("stats", _json(await self.document(transitions=False)), latest_only=True)
            next_stats = now + STATS_EVERY
        return next_stats

    def _look(self) -> bool:
        """Publish the transitions made here since the last look and those the local views reveal (made
        by other replicas); no I/O. True when there was any."""
        told, self._told = self._told, []
        seen = self.feed.transitions.observe(
            [self._breakers.view(BreakerId.of(u, r).key) for u, r in self._running().config.breakers()],
            self._clock.now())
        for transition in (*told, *seen):
            self.stream.publish("transition", _json(describe_transition(transition)))
        return bool(told or seen)


def add_status_routes(app: web.Application, status: StatusService) -> None:
    async def show(_: web.Request) -> web.Response:
        return web.json_response(await status.document())

    async def stream(request: web.Request) -> web.StreamResponse:
        return await status.stream.serve(request, status.snapshot)

    app.router.add_get("/admin/status", show)
    app.router.add_get("/admin/stream", stream)
