"""Admin API for inbound webhooks: the delivery log, queue health, and replay of dead letters.

    GET  /admin/webhooks                                   counts by status, depth, oldest pending age
    GET  /admin/webhooks/{name}/events?status=S&limit=N    delivery-log entries, newest first
    GET  /admin/webhooks/{name}/events/{id}                one entry
    POST /admin/webhooks/{name}/events/{id}/replay         one event back to pending, attempts from 0
    POST /admin/webhooks/{name}/replay?status=dead_letter  every event of that status

Reads are open on the admin port, as the breakers are; replays need ``Authorization: Bearer
<admin.token>``. No answer ever holds a payload or a header of the provider's request: the store
keeps them apart from the log, and the log entries are all this module shows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy.config.model import Config
from proxy.events import WebhookReplayed
from proxy.state.base import BackendUnavailable
from proxy.state.webhooks import EventRecord, EventStatus, QueueStats, WebhookStore
from proxy.web.admin.auth import check_token, refuse

if TYPE_CHECKING:
    from proxy.config.webhooks import Webhook

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
"""Larger asks get this many: one answer stays a few hundred kilobytes at most."""
STATUSES = ", ".join(s.value for s in EventStatus)
NO_EVENT = "no such event: unknown, or older than retention.delivery_log"
REPLAYABLE = frozenset({EventStatus.DEAD_LETTER, EventStatus.FAILED, EventStatus.COMPLETED})
"""What replay may move back to pending (failed: its next attempt is brought forward)."""


def describe_event(record: EventRecord) -> dict[str, Any]:
    """A log entry as JSON: ids, statuses, times, the error in a few words; never a body."""
    return {"id": record.id, "webhook": record.webhook, "status": record.status.value, "attempts": record.attempts,
            "received_at": record.received_at, "last_attempt_at": record.last_attempt_at,
            "completed_at": record.completed_at, "error": record.error or None, "org": record.org or None,
            "event_type": record.event_type or None}


def describe_queue(webhook: Webhook, stats: QueueStats) -> dict[str, Any]:
    age = stats.oldest_pending_age
    return {"name": webhook.name, "path": webhook.path, "provider": webhook.provider, "mode": webhook.mode,
            "counts": {s.value: int(stats.counts.get(s, 0)) for s in EventStatus}, "depth": stats.depth,
            "oldest_pending_seconds": None if age is None else round(age, 3)}


def parse_status(raw: str | None, default: EventStatus | None) -> EventStatus | None:
    """``?status=``; ValueError with the message the 400 carries."""
    if raw is None or raw == "":
        return default
    try:
        return EventStatus(raw)
    except ValueError:
        raise ValueError(f"status must be one of {STATUSES}, not {raw!r}") from None


def parse_limit(raw: str | None) -> int:
    """``?limit=``: a whole number >= 1, capped at MAX_LIMIT; ValueError with the 400's message."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw!r}")
    return min(int(raw), MAX_LIMIT)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def backend_errors(handler: Handler) -> Handler:
    """The store could not answer (Redis down): 503 saying so, never a 500 with a traceback."""
    @wraps(handler)
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BackendUnavailable:
            return refuse(503, "the webhook store (state backend) does not answer; try again", **{"Retry-After": "5"})
    return guarded


def add_webhook_routes(app: web.Application, current: Callable[[], Config], store: WebhookStore | None,
                       emit: Callable[[object], None]) -> None:
    """``current`` returns the running config (webhooks and token follow reloads); ``store`` is None
    when no webhook is configured, and every webhook name is then unknown."""

    def target(request: web.Request, mutates: bool = False) -> tuple[Webhook, WebhookStore] | web.Response:
        """The webhook named in the path and the store, or the refusal: the token first for a mutation
        (so that nothing, not even which webhooks exist, is told without it), then 404."""
        if mutates:
            refused = check_token(request, current().admin.token)
            if refused is not None:
                return refused
        name = request.match_info["name"]
        webhook = next((w for w in current().webhooks if w.name == name), None) if store is not None else None
        if webhook is None or store is None:
            return refuse(404, "no such webhook (see GET /admin/webhooks)")
        return webhook, store

    async def list_webhooks(_: web.Request) -> web.Response:
        if store is None:
            return web.json_response({"webhooks": []})
        return web.json_response({"webhooks": [describe_queue(w, await store.stats(w.name))
                                               for w in current().webhooks]})

    async def list_events(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        webhook, events = found
        try:
            status = parse_status(request.query.get("status"), None)
            limit = parse_limit(request.query.get("limit"))
        except ValueError as error:
            return refuse(400, str(error))
        records = await events.events(webhook.name, status, limit)
        return web.json_response({"webhook": webhook.name, "status": status.value if status else None,
                                  "limit": limit, "events": [describe_event(r) for r in records]})

    async def one_event(request: web.Request) -> web.Response:
        found = target(request)
        if isinstance(found, web.Response):
            return found
        webhook, events = found
        record = await events.event(webhook.name, request.match_info["id"])
        if record is None:
            return refuse(404, NO_EVENT)
        return web.json_response(describe_event(record))

    async def replay_one(request: web.Request) -> web.Response:
        found = target(request, mutates=True)
        if isinstance(found, web.Response):
            return found
        webhook, events = found
        record = await events.event(webhook.name, request.match_info["id"])
        if record is None:
            return refuse(404, NO_EVENT)
        if record.status not in REPLAYABLE:
            return refuse(409, f"the event is {record.status.value}: it is already queued for delivery")
        if not await events.replay(webhook.name, record.id):
            return refuse(409, "the event cannot be replayed: its payload is kept only for dedupe.window, "
                               "or it was queued again meanwhile")
        emit(WebhookReplayed(webhook.name, 1))
        after = await events.event(webhook.name, record.id)
        return web.json_response({"replayed": 1, "event": describe_event(after or record)})

    async def replay_all(request: web.Request) -> web.Response:
        found = target(request, mutates=True)
        if isinstance(found, web.Response):
            return found
        webhook, events = found
        try:
            status = parse_status(request.query.get("status"), EventStatus.DEAD_LETTER)
        except ValueError as error:
            return refuse(400, str(error))
        assert status is not None
        if status not in REPLAYABLE:
            return refuse(400, f"status must be one of dead_letter, failed, completed, not {status.value!r} "
                               "(those events are already queued)")
        count = await events.replay_all(webhook.name, status)
        if count:
            emit(WebhookReplayed(webhook.name, count))
        return web.json_response({"webhook": webhook.name, "status": status.value, "replayed": count})

    app.router.add_get("/admin/webhooks", backend_errors(list_webhooks))
    app.router.add_get("/admin/webhooks/{name}/events", backend_errors(list_events))
    app.router.add_get("/admin/webhooks/{name}/events/{id}", backend_errors(one_event))
    app.router.add_post("/admin/webhooks/{name}/events/{id}/replay", backend_errors(replay_one))
    app.router.add_post("/admin/webhooks/{name}/replay", backend_errors(replay_all))
