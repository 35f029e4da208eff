"""Prometheus families for inbound webhooks, fed from the bus (:mod:`proxy.events`), and the two sampled gauges.

Counted from events, each by the process that did the thing (so fleet sums are exact): what the
listener answered providers (``WebhookReceived``), each delivery attempt (``WebhookAttempted``) and
each event's end (``WebhookSettled``: completed or dead_letter, told once for the fleet by the replica
whose update settled it). Sampled from :meth:`proxy.state.webhooks.WebhookStore.stats` by
:class:`WebhookSampler`, off the request path: the queue depth and the oldest pending event's age,
which with Redis are the fleet's and with the memory store this process's.

Labels: ``webhook`` (a name from the config) plus one from a fixed set; never an org or an event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from proxy.events import WebhookAttempted, WebhookQueueSampled, WebhookReceived, WebhookSettled
from proxy.state.base import BackendUnavailable
from proxy.state.webhooks import WebhookStore

log = logging.getLogger("resilience_proxy.webhooks")

PREFIX = "resilience_proxy_"
ANSWER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)
"""Providers wait 15 s (Twilio) or less; the target is 50 ms at p99."""
END_TO_END_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
"""From a few milliseconds (the app answered at once) to a day of retries."""
SAMPLE_INTERVAL = 2.0


class _Families:
    def __init__(self) -> None:
        self.received = Counter(
            PREFIX + "webhooks_received",
            "Provider requests the webhooks listener answered, by webhook and result: accepted, duplicate, "
            "rejected_signature, too_large, rejected_backend, passthrough, delivered_sync.",
            ["webhook", "result"])
        self.answer = Histogram(
            PREFIX + "webhook_answer_seconds",
            "Time from a provider's request to the listener's answer (queued durably first in queue mode).",
            ["webhook"], buckets=ANSWER_BUCKETS)
        self.attempts = Counter(
            PREFIX + "webhook_attempts",
            "Delivery attempts to the app, by result: completed, failed (another is scheduled), dead_letter.",
            ["webhook", "result"])
        self.deliveries = Counter(
            PREFIX + "webhook_deliveries",
            "Events settled, by outcome: completed or dead_letter (counted once for the fleet).",
            ["webhook", "outcome"])
        self.dead_letters = Counter(
            PREFIX + "webhook_dead_letters",
            "Events moved to dead_letter (retrying could not help, or attempts ran out); see "
            "GET /admin/webhooks/NAME/events?status=dead_letter.",
            ["webhook"])
        self.end_to_end = Histogram(
            PREFIX + "webhook_end_to_end_seconds",
            "Time from receiving an event to the app's 2xx, retries included.",
            ["webhook"], buckets=END_TO_END_BUCKETS)
        # livemax: with Redis every worker samples the same shared queue.
        self.depth = Gauge(
            PREFIX + "webhook_queue_depth",
            "Events waiting for delivery or in delivery (pending, failed, processing).",
            ["webhook"], multiprocess_mode="livemax")
        self.oldest = Gauge(
            PREFIX + "webhook_oldest_pending_seconds",
            "Age of the oldest event not yet delivered (0 when none waits).",
            ["webhook"], multiprocess_mode="livemax")


@lru_cache(maxsize=1)
def webhook_families() -> _Families:
    """Registered once per process (no ``_created`` series, as the other families)."""
    disable_created_metrics()
    return _Families()


class _Webhook:
    """One webhook's label children, made on first use."""

    __slots__ = ("answer", "attempts", "dead_letters", "end_to_end", "families", "name", "outcomes", "received")

    def __init__(self, families: _Families, name: str) -> None:
        self.families, self.name = families, name
        self.received: dict[str, Counter] = {}
        self.attempts: dict[str, Counter] = {}
        self.outcomes: dict[str, Counter] = {}
        self.answer = families.answer.labels(name)
        self.end_to_end = families.end_to_end.labels(name)
        self.dead_letters = families.dead_letters.labels(name)


def _child(children: dict[str, Counter], family: Counter, webhook: str, value: str) -> Counter:
    child = children.get(value)
    if child is None:
        child = children[value] = family.labels(webhook, value)
    return child


class WebhookMetrics:
    """The bus handlers for the webhook families (registered into :class:`proxy.observe.metrics.ProxyMetrics`)."""

    def __init__(self) -> None:
        self.families = webhook_families()
        self._webhooks: dict[str, _Webhook] = {}

    def handlers(self) -> dict[type, Callable[[Any], None]]:
        return {WebhookReceived: self._received, WebhookAttempted: self._attempted, WebhookSettled: self._settled,
                WebhookQueueSampled: self._sampled}

    def webhook(self, name: str) -> _Webhook:
        children = self._webhooks.get(name)
        if children is None:
            children = self._webhooks[name] = _Webhook(self.families, name)
        return children

    def _received(self, event: WebhookReceived) -> None:
        children = self.webhook(event.webhook)
        _child(children.received, self.families.received, event.webhook, event.result).inc()
        children.answer.observe(event.seconds)

    def _attempted(self, event: WebhookAttempted) -> None:
        children = self.webhook(event.webhook)
        _child(children.attempts, self.families.attempts, event.webhook, event.result).inc()

    def _settled(self, event: WebhookSettled) -> None:
        children = self.webhook(event.webhook)
        _child(children.outcomes, self.families.deliveries, event.webhook, event.outcome).inc()
        if event.outcome == "dead_letter":
            children.dead_letters.inc()
        else:
            children.end_to_end.observe(event.end_to_end)

    def _sampled(self, event: WebhookQueueSampled) -> None:
        # Making the webhook's children also exports dead_letters_total at 0 before the first dead
        # letter, so that increase() in the alert rule sees the first one.
        self.webhook(event.webhook)
        self.families.depth.labels(event.webhook).set(event.depth)
        self.families.oldest.labels(event.webhook).set(event.oldest_pending_age or 0.0)

    def forget(self, names: Iterable[str]) -> None:
        """Stop exporting the gauges of webhooks a reload removed."""
        for name in names:
            for gauge in (self.families.depth, self.families.oldest):
                try:
                    gauge.remove(name)
                except KeyError:
                    pass


class WebhookSampler:
    """Reads each webhook's queue stats every ``interval`` and puts them on the bus as
    :class:`~proxy.events.WebhookQueueSampled` (gauges and the backlog alert listen)."""

    def __init__(self, names: Callable[[], Iterable[str]], store: WebhookStore, emit: Callable[[object], None],
                 forget: Callable[[Iterable[str]], None] = lambda _: None) -> None:
        self._names, self._store, self._emit, self._forget = names, store, emit, forget
        self._seen: set[str] = set()

    async def sample(self) -> None:
        """One round; a webhook whose stats the backend cannot give keeps its last values."""
        names = list(self._names())
        self._forget(self._seen - set(names))
        self._seen = set(names)
        for name in names:
            try:
                stats = await self._store.stats(name)
            except BackendUnavailable:
                continue
            self._emit(WebhookQueueSampled(name, stats.depth, stats.oldest_pending_age))

    async def run(self, interval: float = SAMPLE_INTERVAL) -> None:
        """Sample until cancelled; an unexpected failure is logged, never the end of the loop."""
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("sampling the webhook queues failed")
            await asyncio.sleep(interval)
