"""The embedded webhook store: a bounded queue and delivery log in this process.

**Events are lost on restart**: nothing leaves the process, so a crash or a deploy drops every
event not yet delivered, and each replica deduplicates only what it received itself. The
sidecar says so at start and ``doctor`` warns about it; use the ``redis`` backend for anything
that matters. It keeps the same rules as the Redis store (the contract suite runs on both):
payloads live for the dedupe window, log entries for the retention, a claim not settled within
``visibility`` seconds is claimed again. At most ``max_events`` log entries are kept per webhook;
past it the oldest finished ones go first, and when every entry is unfinished :meth:`accept`
raises :class:`BackendUnavailable`, so the listener answers as ``on_backend_error`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

from proxy.clock import Clock, SystemClock
from proxy.state.base import BackendUnavailable
from proxy.state.webhooks import Accepted, Delivery, EventRecord, EventStatus, InboundEvent, KeptAnswer, QueueStats

UNFINISHED = (EventStatus.PENDING, EventStatus.PROCESSING, EventStatus.FAILED)


@dataclass
class _Stored:
    record: EventRecord
    payload: InboundEvent | None
    """None once the dedupe window is over: nothing left to deliver or replay."""
    log_until: float
    claim: tuple[str, float] | None = None
    """(token, claimed_at) while a consumer holds it."""


@dataclass
class _Dedupe:
    """What a dedupe key points at, until when."""

    event_id: str
    until: float
    held: bool = False
    """A sync-mode event still being forwarded (:meth:`MemoryWebhookStore.hold`)."""
    answer: KeptAnswer | None = None


class _Queue:
    """One webhook's events."""

    def __init__(self) -> None:
        self.events: OrderedDict[str, _Stored] = OrderedDict()
        """Oldest first."""
        self.dedupe: OrderedDict[str, _Dedupe] = OrderedDict()
        """By dedupe key, oldest first (a hold may lapse before older keys: looked up with its time)."""
        self.payloads: deque[tuple[float, str]] = deque()
        """(until, event id) of the payloads kept, oldest first."""
        self.claimed: dict[str, None] = {}
        """Events a consumer holds, oldest claim first."""
        self.ready: deque[str] = deque()
        self.delayed: list[tuple[float, int, str]] = []
        self.work = asyncio.Event()


class MemoryWebhookStore:
    """Webhook events in this process only: lost on restart, never shared with other replicas."""

    def __init__(self, *, clock: Clock | None = None, max_events: int = 10_000) -> None:
        self._clock = clock or SystemClock()
        self._max_events = max_events
        self._queues: dict[str, _Queue] = {}
        self._tokens = itertools.count(1)

    @property
    def backend_up(self) -> bool:
        return True

    # -- the WebhookStore protocol ----------------------------------------------------------------

    async def accept(self, event: InboundEvent, *, dedupe_window: float, log_retention: float,
                     delivered: bool = False, answer: KeptAnswer | None = None) -> Accepted:
        now = self._clock.now()
        queue = self._queue(event.webhook)
        self._expire(queue, now)
        known = self._known(queue, event.dedupe_key, now)
        if known is not None and not (known.held and known.event_id == event.event_id):
            return Accepted(known.event_id, True, known.answer)
        self._make_room(queue)
        event_id = event.event_id or uuid.uuid4().hex
        at = now if delivered else None
        record = EventRecord(id=event_id, webhook=event.webhook,
                             status=EventStatus.COMPLETED if delivered else EventStatus.PENDING,
                             attempts=1 if delivered else 0, received_at=event.received_at, last_attempt_at=at,
                             completed_at=at, error="", org=event.org, event_type=event.event_type)
        queue.dedupe.pop(event.dedupe_key, None)
        queue.dedupe[event.dedupe_key] = _Dedupe(event_id, now + dedupe_window, answer=answer if delivered else None)
        queue.events[event_id] = _Stored(record, None if delivered else event, now + log_retention)
        if not delivered:
            queue.payloads.append((now + dedupe_window, event_id))
            queue.ready.append(event_id)
            queue.work.set()
        return Accepted(event_id, False)

    async def hold(self, event: InboundEvent, *, seconds: float) -> Accepted:
        now = self._clock.now()
        queue = self._queue(event.webhook)
        self._expire(queue, now)
        known = self._known(queue, event.dedupe_key, now)
        if known is not None:
            return Accepted(known.event_id, True, known.answer)
        event_id = event.event_id or uuid.uuid4().hex
        queue.dedupe[event.dedupe_key] = _Dedupe(event_id, now + seconds, held=True)
        return Accepted(event_id, False)

    async def stats(self, webhook: str) -> QueueStats:
        now = self._clock.now()
        queue = self._queue(webhook)
        self._expire(queue, now)
        counts = dict.fromkeys(EventStatus, 0)
        oldest: float | None = None
        for stored in queue.events.values():
            counts[stored.record.status] += 1
            if stored.record.status in UNFINISHED:
                oldest = stored.record.received_at if oldest is None else min(oldest, stored.record.received_at)
        depth = sum(counts[status] for status in UNFINISHED)
        return QueueStats(webhook, counts, depth, None if oldest is None else max(0.0, now - oldest))

    async def events(self, webhook: str, status: EventStatus | None, limit: int) -> list[EventRecord]:
        queue = self._queue(webhook)
        self._expire(queue, self._clock.now())
        found: list[EventRecord] = []
        for stored in reversed(queue.events.values()):
            if len(found) >= limit:
                break
            if status is None or stored.record.status == status:
                found.append(stored.record)
        return found

    async def event(self, webhook: str, event_id: str) -> EventRecord | None:
        queue = self._queue(webhook)
        self._expire(queue, self._clock.now())
        stored = queue.events.get(event_id)
        return stored.record if stored else None

    async def replay(self, webhook: str, event_id: str) -> bool:
        queue = self._queue(webhook)
        now = self._clock.now()
        self._expire(queue, now)
        stored = queue.events.get(event_id)
        if stored is None or stored.payload is None or stored.record.status in (
                EventStatus.PENDING, EventStatus.PROCESSING):
            return False
        queue.delayed = [item for item in queue.delayed if item[2] != event_id]
        heapq.heapify(queue.delayed)
        stored.record = replace(stored.record, status=EventStatus.PENDING, attempts=0, error="", completed_at=None,
                                last_attempt_at=None)
        queue.ready.append(event_id)
        queue.work.set()
        return True

    async def replay_all(self, webhook: str, status: EventStatus) -> int:
        queue = self._queue(webhook)
        ids = [event_id for event_id, stored in queue.events.items() if stored.record.status == status]
        return sum([await self.replay(webhook, event_id) for event_id in ids])

    # -- the DeliveryQueue protocol ---------------------------------------------------------------

    async def claim(self, webhook: str, consumer: str, count: int, visibility: float) -> list[Delivery]:
        now = self._clock.now()
        queue = self._queue(webhook)
        self._expire(queue, now)
        while queue.delayed and queue.delayed[0][0] <= now:
            queue.ready.append(heapq.heappop(queue.delayed)[2])
        taken: list[str] = []
        for event_id in list(queue.claimed):  # held past the visibility timeout: its consumer is gone
            stored = queue.events.get(event_id)
            if stored is None or stored.claim is None:
                del queue.claimed[event_id]
                continue
            if len(taken) >= count or stored.claim[1] + visibility > now:
                break
            del queue.claimed[event_id]
            taken.append(event_id)
        while queue.ready and len(taken) < count:
            taken.append(queue.ready.popleft())
        deliveries = []
        for event_id in taken:
            stored = queue.events.get(event_id)
            if stored is None:
                continue
            if stored.payload is None:
                stored.claim = None
                stored.record = replace(stored.record, status=EventStatus.DEAD_LETTER,
                                        error="payload expired before delivery")
                continue
            token = str(next(self._tokens))
            stored.claim = (token, now)
            queue.claimed[event_id] = None
            stored.record = replace(stored.record, status=EventStatus.PROCESSING, attempts=stored.record.attempts + 1,
                                    last_attempt_at=now)
            event = stored.payload
            deliveries.append(Delivery(webhook=webhook, event_id=event_id, attempt=stored.record.attempts,
                                       received_at=event.received_at, method=event.method, query=event.query,
                                       headers=event.headers, body=event.body, verified=event.verified, token=token))
        return deliveries

    async def settle(self, delivery: Delivery, status: EventStatus, *, error: str = "",
                     retry_at: float = 0.0) -> bool:
        now = self._clock.now()
        queue = self._queue(delivery.webhook)
        stored = queue.events.get(delivery.event_id)
        if stored is None or stored.claim is None or stored.claim[0] != delivery.token:
            return False
        stored.claim = None
        queue.claimed.pop(delivery.event_id, None)
        completed = status == EventStatus.COMPLETED
        stored.record = replace(stored.record, status=status, error="" if completed else error,
                                completed_at=now if completed else stored.record.completed_at)
        if status == EventStatus.FAILED:
            heapq.heappush(queue.delayed, (retry_at, next(self._tokens), delivery.event_id))
        return True

    async def release(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            queue = self._queue(delivery.webhook)
            stored = queue.events.get(delivery.event_id)
            if stored is None or stored.claim is None or stored.claim[0] != delivery.token:
                continue
            stored.claim = None
            queue.claimed.pop(delivery.event_id, None)
            attempts = stored.record.attempts - 1
            stored.record = replace(stored.record, attempts=attempts,
                                    status=EventStatus.FAILED if attempts else EventStatus.PENDING)
            queue.ready.append(delivery.event_id)
            queue.work.set()

    async def wait_for_work(self, webhook: str, timeout: float) -> None:
        work = self._queue(webhook).work
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await work.wait()
        work.clear()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    # -- keeping it bounded -----------------------------------------------------------------------

    def _queue(self, webhook: str) -> _Queue:
        queue = self._queues.get(webhook)
        if queue is None:
            queue = self._queues[webhook] = _Queue()
        return queue

    @staticmethod
    def _expire(queue: _Queue, now: float) -> None:
        """Drop what outlived its window: dedupe keys, payloads, log entries (each kept oldest first)."""
        while queue.dedupe and next(iter(queue.dedupe.values())).until <= now:
            queue.dedupe.popitem(last=False)
        while queue.payloads and queue.payloads[0][0] <= now:
            stored = queue.events.get(queue.payloads.popleft()[1])
            if stored is not None:
                stored.payload = None
        while queue.events and next(iter(queue.events.values())).log_until <= now:
            event_id, _ = queue.events.popitem(last=False)
            queue.claimed.pop(event_id, None)

    @staticmethod
    def _known(queue: _Queue, key: str, now: float) -> _Dedupe | None:
        known = queue.dedupe.get(key)
        if known is not None and known.until <= now:  # a lapsed hold behind longer-lived keys
            del queue.dedupe[key]
            return None
        return known

    def _make_room(self, queue: _Queue) -> None:
        if len(queue.events) < self._max_events:
            return
        for event_id, stored in queue.events.items():
            if stored.record.status not in UNFINISHED:
                del queue.events[event_id]
                return
        raise BackendUnavailable(f"the in-memory webhook queue holds {self._max_events} undelivered events")
