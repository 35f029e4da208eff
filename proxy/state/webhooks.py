"""What an inbound-webhook store offers: the shared types and the interface every backend implements.

The listener (:mod:`proxy.web`) builds an :class:`InboundEvent` after verification and hands it to
:meth:`WebhookStore.accept`, which deduplicates and enqueues it in one round trip; the delivery
workers take events from the same store; the admin API reads the delivery log through
:meth:`WebhookStore.stats`, :meth:`WebhookStore.events` and :meth:`WebhookStore.event`, and
replays through :meth:`WebhookStore.replay` / :meth:`WebhookStore.replay_all`. The log never
holds a body: payloads are PII (phone numbers, message texts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class EventStatus(str, Enum):
    """Where an event is in its life; the names are the seed platform's delivery-log statuses."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    """An attempt failed and another is scheduled."""
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class InboundEvent:
    """One verified request from a provider, as the listener hands it over."""

    webhook: str
    """The webhook's name (the key under ``webhooks:``)."""
    dedupe_key: str
    """From the provider's default or ``dedupe.key``."""
    method: str
    query: str
    """The raw query string of the provider's request ('' if none), kept for delivery."""
    headers: tuple[tuple[str, str], ...]
    """End-to-end headers to deliver (hop-by-hop removed)."""
    body: bytes
    received_at: float
    """Epoch seconds."""
    org: str
    """'' when ``org`` is not configured or absent."""
    event_type: str
    """Twilio MessageStatus/SmsStatus, Google X-Goog-Resource-State, else ''."""
    verified: str
    """twilio | google | hmac | none."""
    event_id: str = ""
    """The id to give the event; '' lets the store choose. In ``mode: sync`` the listener has already
    sent the app an ``X-Webhook-Id``: the event must keep it when it is logged or queued."""


MAX_KEPT_ANSWER = 64 * 1024
"""The largest app answer body a store keeps for duplicates (TwiML is a few hundred bytes); a larger
answer is not kept, and its duplicates get the provider's empty success, as in ``mode: queue``."""


@dataclass(frozen=True)
class KeptAnswer:
    """The app's answer to a ``mode: sync`` event, kept with its dedupe key so a duplicate gets it too."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Accepted:
    """What :meth:`WebhookStore.accept` (or :meth:`WebhookStore.hold`) did."""

    event_id: str
    """X-Webhook-Id: stable per event (a duplicate gets the original's id)."""
    duplicate: bool
    answer: KeptAnswer | None = None
    """A duplicate of an event delivered in ``mode: sync``: the app's answer to the original, when kept."""


@dataclass(frozen=True)
class EventRecord:
    """One delivery-log entry (never the body)."""

    id: str
    webhook: str
    status: EventStatus
    attempts: int
    received_at: float
    last_attempt_at: float | None
    completed_at: float | None
    error: str
    """The last failure in a few words; never a body."""
    org: str
    event_type: str


@dataclass(frozen=True)
class QueueStats:
    """One webhook's queue, for the admin API and the gauges."""

    webhook: str
    counts: Mapping[EventStatus, int]
    """Delivery-log entries by status (within retention)."""
    depth: int
    """Events waiting or in delivery (pending + failed + processing)."""
    oldest_pending_age: float | None
    """Seconds since the oldest not-yet-completed event was received; None when there is none."""


class WebhookStore(Protocol):
    async def accept(
        self, event: InboundEvent, *, dedupe_window: float, log_retention: float, delivered: bool = False,
        answer: KeptAnswer | None = None,
    ) -> Accepted:
        """Dedupe and enqueue in one round trip.

        ``delivered=True`` (sync mode, the app answered 2xx): log it completed, keep the dedupe key and
        ``answer`` (for the dedupe window), queue nothing. A duplicate gets the original's id and kept
        answer, if any. A :meth:`hold` on the same dedupe key with the same ``event_id`` is taken over,
        not a duplicate. Raises :class:`proxy.state.base.BackendUnavailable` when the backend cannot answer.
        """
        ...

    async def hold(self, event: InboundEvent, *, seconds: float) -> Accepted:
        """Sync mode, before forwarding, in one round trip: a duplicate is answered as by :meth:`accept`
        (nothing changes); else the dedupe key is held for ``seconds`` (the forward's time) under
        ``event.event_id``, so that a duplicate arriving meanwhile is a duplicate (with no answer yet).
        The hold lapses by itself if :meth:`accept` never comes (the process died mid-forward)."""
        ...

    async def stats(self, webhook: str) -> QueueStats:
        """Counts by status, queue depth and the oldest pending event's age."""
        ...

    async def events(self, webhook: str, status: EventStatus | None, limit: int) -> list[EventRecord]:
        """Delivery-log entries, newest first; all statuses when ``status`` is None."""
        ...

    async def event(self, webhook: str, event_id: str) -> EventRecord | None:
        """One delivery-log entry; None when unknown or expired."""
        ...

    async def replay(self, webhook: str, event_id: str) -> bool:
        """dead_letter/failed/completed -> pending, attempts counted from 0; False when unknown,
        expired (its payload is gone) or already waiting/in delivery."""
        ...

    async def replay_all(self, webhook: str, status: EventStatus) -> int:
        """Replay every event of ``status``; returns how many were replayed."""
        ...


@dataclass(frozen=True)
class Delivery:
    """One claimed event, as a delivery worker needs it: the payload, and which try this is."""

    webhook: str
    event_id: str
    attempt: int
    """1 for the first try; counted afresh after a replay."""
    received_at: float
    method: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    verified: str
    token: str
    """The backend's handle on this claim (the stream entry id in Redis)."""


class DeliveryQueue(WebhookStore, Protocol):
    """The workers' side of a store: claim events, settle each attempt, hand back what was not started.

    A claim is a lease: an event claimed by a consumer that neither settles nor releases it
    within ``visibility`` seconds (the process died) is claimed again by the next consumer that asks.
    """

    async def claim(self, webhook: str, consumer: str, count: int, visibility: float) -> list[Delivery]:
        """Up to ``count`` events due for delivery, each marked processing with its attempt counted."""
        ...

    async def settle(self, delivery: Delivery, status: EventStatus, *, error: str = "", retry_at: float = 0.0) -> bool:
        """Record an attempt's end: COMPLETED, DEAD_LETTER, or FAILED with the next try at ``retry_at``.
        False when the claim was lost (another consumer took the event over) and nothing changed."""
        ...

    async def release(self, deliveries: list[Delivery]) -> None:
        """Hand claimed, not-started events back for any consumer, their attempt not counted."""
        ...

    async def wait_for_work(self, webhook: str, timeout: float) -> None:
        """Return when this process accepted an event for ``webhook``, or after ``timeout`` seconds
        (events accepted elsewhere and retries coming due are found by polling)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
