"""The inbound webhooks listener: providers call in here, on its own port (``webhooks.listen``).

It serves the configured webhook paths and nothing else (no proxying, no admin). Per request::

    path unknown ─────────────────────────────────────────────► 404
    body over max_body (by Content-Length, or while read) ────► 413
    provider check fails (policy/webhook_auth) ───────────────► 403 + Proxy-Status; nothing stored or sent
    mode: queue ── store.accept ──► the provider's answer (Twilio: empty TwiML; others: empty 200),
                                    a duplicate answered like the original
    mode: sync ─── store.hold ─┬─ a duplicate ► the app's answer to the original, kept with its dedupe key;
                               │                the provider's answer when none is kept (the original is
                               │                still being forwarded, or was not a 2xx, or was too large)
                               └─ new: forward to the app ─┬─ it answered (not 5xx) ► its answer relayed;
                                                           │   2xx logged as delivered, the answer kept
                                                           └─ down, timeout, 5xx ───► queued as in mode: queue
    store down ─── on_backend_error: passthrough ─► forwarded at once, the app's answer relayed
                                     reject ──────► 503 + Retry-After: the provider retries

Webhook definitions are read from the running config on every request, so a reload applies to the
next one. Every answer emits :class:`~proxy.events.WebhookReceived`. No log line holds anything from
the body, the query or the headers: Twilio's carry phone numbers and message texts.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

import aiohttp
from aiohttp import web

from proxy.config.webhooks import Webhook
from proxy.errors import (
    BodyTooLarge,
    InternalError,
    NoRoute,
    ProxyError,
    QueueUnavailable,
    UpstreamConnectError,
    UpstreamTimeout,
    WebhookRefused,
)
from proxy.events import WebhookReceived
from proxy.policy.delivery import TIMEOUT
from proxy.policy.webhook_auth import verify
from proxy.policy.webhook_keys import dedupe_key, event_type, forward_id, org
from proxy.policy.webhook_request import InboundRequest
from proxy.state.base import BackendUnavailable
from proxy.state.webhooks import MAX_KEPT_ANSWER, Accepted, InboundEvent, KeptAnswer, WebhookStore
from proxy.web.body import expects_continue, send_continue
from proxy.web.headers import HOP_BY_HOP
from proxy.web.responses import error_response
from proxy.web.webhook_forward import AppAnswer, forward, read_at_most

log = logging.getLogger("resilience_proxy.webhooks")

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
"""Valid TwiML that tells Twilio to do nothing."""
HOLD_MARGIN = 5.0
"""Seconds a sync-mode dedupe hold outlasts the forward's timeout, for the store call that ends it."""
NOT_KEPT = HOP_BY_HOP | {"host", "content-length", "expect"}
"""Request headers not stored with the event: they describe this connection, not the event."""
Emit = Callable[[object], None]


class WebhookListener:
    """Answers providers for the webhooks ``webhooks()`` returns now; :attr:`runner` is bound by the sidecar."""

    def __init__(self, webhooks: Callable[[], Sequence[Webhook]], store: WebhookStore, emit: Emit, *,
                 shutdown_timeout: float = 5.0) -> None:
        self._webhooks = webhooks
        self._store = store
        self._emit = emit
        self._routes: dict[str, Webhook] = {}
        self._routes_of: Sequence[Webhook] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.runner = web.ServerRunner(web.Server(self.handle, access_log=None), handle_signals=False,
                                       shutdown_timeout=shutdown_timeout)

    async def start(self) -> None:
        """The client for synchronous forwards (``mode: sync``, passthrough)."""
        self._session = aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def webhook_at(self, path: str) -> Webhook | None:
        """The webhook configured at ``path`` (a trailing ``/`` ignored, as in config) in the running config."""
        current = self._webhooks()
        if current is not self._routes_of:
            self._routes = {hook.path: hook for hook in current}
            self._routes_of = current
        return self._routes.get(path.rstrip("/") or "/")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        webhook = self.webhook_at(request.path)
        if webhook is None:
            return _error(NoRoute("no webhook at this path"))
        try:
            result, response = await self._receive(webhook, request)
        except (aiohttp.ClientPayloadError, ConnectionError):
            raise  # the provider went away mid-body: nobody to answer
        except Exception:
            log.exception("webhook request failed", extra={"webhook": webhook.name})
            return _error(InternalError("internal error"))
        self._emit(WebhookReceived(webhook.name, result, time.monotonic() - started))
        return response

    async def _receive(self, webhook: Webhook, request: web.BaseRequest) -> tuple[str, web.StreamResponse]:
        body = await _read_body(request, webhook.max_body)
        if body is None:
            response = _error(BodyTooLarge(f"the body is over {webhook.max_body} bytes"))
            response.force_close()  # the rest of the body is never read
            return "too_large", response
        inbound = InboundRequest(request.method, request.raw_path.partition("?")[2],
                                 {name.lower(): value for name, value in reversed(request.headers.items())}, body)
        verdict = verify(webhook, inbound)
        if not verdict.ok:
            log.warning("webhook request refused: %s", verdict.reason, extra={"webhook": webhook.name})
            return "rejected_signature", _error(WebhookRefused(f"webhook {webhook.name}: {verdict.reason}"))
        key = dedupe_key(webhook, inbound)
        event = InboundEvent(
            webhook=webhook.name, dedupe_key=key, method=request.method, query=inbound.query,
            headers=tuple((name, value) for name, value in request.headers.items() if name.lower() not in NOT_KEPT),
            body=body, received_at=time.time(), org=org(webhook, inbound), event_type=event_type(webhook, inbound),
            verified=webhook.provider,
        )
        if webhook.mode == "sync":
            return await self._sync(webhook, replace(event, event_id=forward_id(webhook, key)))
        return await self._queue(webhook, event)

    async def _queue(self, webhook: Webhook, event: InboundEvent,
                     failed: AppAnswer | None = None) -> tuple[str, web.StreamResponse]:
        """Store the event for delivery and give the provider its answer. ``failed``: the app's answer to a
        synchronous forward that already failed (passthrough then relays it rather than forwarding again)."""
        try:
            accepted = await self._store.accept(event, dedupe_window=webhook.dedupe.window,
                                                log_retention=webhook.retention.delivery_log)
        except BackendUnavailable:
            return await self._backend_down(webhook, event, failed)
        if accepted.duplicate:
            return "duplicate", duplicate_answer(webhook, accepted)
        return "accepted", provider_answer(webhook)

    async def _sync(self, webhook: Webhook, event: InboundEvent) -> tuple[str, web.StreamResponse]:
        try:
            held = await self._store.hold(event, seconds=min(webhook.dedupe.window,
                                                             webhook.delivery.timeout + HOLD_MARGIN))
        except BackendUnavailable:  # cannot deduplicate: forward anyway, the app's answer still counts
            held = None
        if held is not None and held.duplicate:
            return "duplicate", duplicate_answer(webhook, held)
        answer = await self._forward(webhook, event)
        if answer.failed:
            log.info("webhook app failed in sync mode, event queued: %s", _describe(answer),
                     extra={"webhook": webhook.name})
            return await self._queue(webhook, event, answer)
        if 200 <= answer.status < 300:
            try:
                await self._store.accept(event, dedupe_window=webhook.dedupe.window,
                                         log_retention=webhook.retention.delivery_log, delivered=True,
                                         answer=kept(answer))
            except BackendUnavailable:
                log.warning("webhook delivered but not logged: store unavailable", extra={"webhook": webhook.name})
        return "delivered_sync", relay(answer)

    async def _backend_down(self, webhook: Webhook, event: InboundEvent,
                            failed: AppAnswer | None) -> tuple[str, web.StreamResponse]:
        if webhook.on_backend_error == "reject":
            log.warning("webhook store unavailable: provider told to retry", extra={"webhook": webhook.name})
            return "rejected_backend", _error(QueueUnavailable(f"webhook {webhook.name}: queue unavailable"))
        log.warning("webhook store unavailable: forwarded directly", extra={"webhook": webhook.name})
        if not event.event_id:
            event = replace(event, event_id=forward_id(webhook, event.dedupe_key))
        answer = failed or await self._forward(webhook, event)
        if answer.status:
            return "passthrough", relay(answer)
        error: ProxyError = (UpstreamTimeout if answer.error == TIMEOUT else UpstreamConnectError)(
            f"webhook {webhook.name}: the app did not answer ({_describe(answer)})")
        return "passthrough", _error(error)

    async def _forward(self, webhook: Webhook, event: InboundEvent) -> AppAnswer:
        assert self._session is not None, "start() first"
        return await forward(self._session, webhook, event)


def provider_answer(webhook: Webhook) -> web.Response:
    """What a provider gets once its event is safe: Twilio valid TwiML that does nothing, others an empty 200."""
    if webhook.provider == "twilio":
        return web.Response(status=200, body=EMPTY_TWIML, headers={"Content-Type": "text/xml"})
    return web.Response(status=200)


def kept(answer: AppAnswer) -> KeptAnswer | None:
    """What the store keeps of the app's answer for duplicates: all of it, or nothing past MAX_KEPT_ANSWER."""
    if len(answer.body) > MAX_KEPT_ANSWER:
        return None
    return KeptAnswer(answer.status, answer.content_type, answer.body)


def duplicate_answer(webhook: Webhook, accepted: Accepted) -> web.Response:
    """A duplicate is answered like the original: the app's kept answer, else the provider's answer."""
    if accepted.answer is None:
        return provider_answer(webhook)
    return relay(AppAnswer(accepted.answer.status, accepted.answer.body, accepted.answer.content_type))


def relay(answer: AppAnswer) -> web.Response:
    """The app's answer as the provider gets it: status, body and Content-Type."""
    headers = {"Content-Type": answer.content_type} if answer.content_type else None
    return web.Response(status=answer.status, body=answer.body, headers=headers)


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body, or None when it is over ``limit``: refused by Content-Length before reading, else
    as soon as the bytes read pass it."""
    if (request.content_length or 0) > limit:
        return None
    if not request.body_exists:
        return b""
    if expects_continue(request):
        await send_continue(request)
    return await read_at_most(request.content, limit)


def _describe(answer: AppAnswer) -> str:
    return f"{answer.status} from the app" if answer.status else answer.error.replace("_", " ")


def _error(error: ProxyError) -> web.Response:
    return error_response(error, uuid.uuid4().hex)
