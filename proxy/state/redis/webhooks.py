"""The Redis webhook store: events durable in Redis Streams, shared by every replica.

Each webhook has one stream ``<prefix>{wh:<name>}:q`` with the consumer group ``delivery``; the
key layout, the TTLs and the trimming are documented at the top of ``lua/webhook.lua``. Every
call is one EVALSHA (a second one only after Redis lost the scripts): :meth:`accept` dedupes,
logs and enqueues atomically, so the provider is answered only once the event is durable. A
claim is a stream read by this replica's consumer; an entry left unacknowledged for
``visibility`` seconds (its replica died) is taken over by the next claim anywhere (XAUTOCLAIM).
Retries wait in a sorted set until they are due, then go back into the stream.

When Redis fails the store raises :class:`BackendUnavailable` at once until a PING in the
background finds it again, so the receive path waits on a dead Redis at most ``timeout``, once,
and the workers back off instead of crashing.
On a Redis Cluster every call is one slot: the scripts get the stream key in KEYS and derive every
other key from it (a claim learns event ids only from the stream, so they cannot be declared up
front), keeping its ``{wh:<name>}`` tag; a cluster runs a script on keys of its own slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as aioredis

from proxy.clock import Clock, SystemClock
from proxy.state.base import BackendTimeout, BackendUnavailable
from proxy.state.redis.client import RedisHealth, cancel_tasks, close_quietly, connect, describe, reconnect, translated
from proxy.state.redis.scripts import Scripts
from proxy.state.webhooks import Accepted, Delivery, EventRecord, EventStatus, InboundEvent, KeptAnswer, QueueStats

log = logging.getLogger("resilience_proxy.state")

SCRIPTS = Scripts("webhook_accept", "webhook_claim", "webhook_settle", "webhook_release", "webhook_replay",
                  "webhook_stats", prelude="webhook")

LOG_FIELDS = ("s", "a", "r", "l", "c", "e", "o", "t")
STATUSES = tuple(EventStatus)
PRUNE_INTERVAL = 60.0
"""Seconds between two looks for the consumers of replicas that are gone."""
REPLAY_BATCH = 200
"""Events per replay script, so that replaying thousands never blocks Redis for long."""


def stream_key(prefix: str, webhook: str) -> str:
    """``rp:{wh:twilio_status}:q``: the hash tag keeps every key of a webhook on one Cluster slot."""
    return f"{prefix}{{wh:{webhook}}}:q"


def dedupe_digest(key: str) -> str:
    """A fixed-size Redis key part for any dedupe key (they may be long, and hold provider ids)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def new_event_id() -> str:
    return uuid.uuid4().hex


class RedisWebhookStore(RedisHealth):
    """Webhook events, their delivery log and the delivery queue, in Redis."""

    _what = "webhook queues"

    def __init__(self, redis_url: str, *, prefix: str = "rp:", clock: Clock | None = None,
                 timeout: float = 0.25, worker_timeout: float = 2.0, retry_interval: float = 1.0,
                 max_connections: int = 8) -> None:
        """``timeout`` bounds the receive path's wait (:meth:`accept`); ``worker_timeout`` every other
        call (claims carry bodies of up to a few MiB)."""
        super().__init__(redis_url, retry_interval)
        self._url = redis_url
        self._prefix = prefix
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._worker_timeout = worker_timeout
        self._max_connections = max_connections
        self._client: aioredis.Redis | None = None
        self._work: dict[str, asyncio.Event] = {}
        self._next_prune: dict[str, float] = {}

    # -- the WebhookStore protocol ----------------------------------------------------------------

    async def accept(self, event: InboundEvent, *, dedupe_window: float, log_retention: float,
                     delivered: bool = False, answer: KeptAnswer | None = None) -> Accepted:
        kept: tuple[str | int | bytes, ...] = (answer.status, answer.content_type, answer.body) if (
            delivered and answer is not None) else ("", "", "")
        accepted = await self._accept("1" if delivered else "0", event, dedupe_window, log_retention, kept)
        if not accepted.duplicate and not delivered:
            self._signal(event.webhook)
        return accepted

    async def hold(self, event: InboundEvent, *, seconds: float) -> Accepted:
        return await self._accept("h", event, seconds, 0.0, ("", "", ""))

    async def stats(self, webhook: str) -> QueueStats:
        now = self._clock.now()
        reply = await self._run("stats", webhook, self._worker_timeout, repr(now))
        counts = {status: int(count) for status, count in zip(STATUSES, reply)}
        oldest = _text(reply[5])
        depth = counts[EventStatus.PENDING] + counts[EventStatus.FAILED] + counts[EventStatus.PROCESSING]
        return QueueStats(webhook, counts, depth, max(0.0, now - float(oldest)) if oldest else None)

    async def events(self, webhook: str, status: EventStatus | None, limit: int) -> list[EventRecord]:
        if limit <= 0:
            return []
        now = self._clock.now()
        statuses = STATUSES if status is None else (status,)
        base = stream_key(self._prefix, webhook)[:-1]
        async with self._calling(self._worker_timeout):
            async with self._redis().pipeline(transaction=False) as pipe:
                for one in statuses:
                    pipe.zrevrangebyscore(f"{base}s:{one.value}", "+inf", f"({now!r}", start=0, num=limit,
                                          withscores=True)
                listed = await pipe.execute()
            newest = sorted(((score, _text(member)) for rows in listed for member, score in rows), reverse=True)
            ids = [event_id for _, event_id in newest[:limit]]
            async with self._redis().pipeline(transaction=False) as pipe:
                for event_id in ids:
                    pipe.hmget(f"{base}e:{event_id}", LOG_FIELDS)
                rows = await pipe.execute()
        return [record for event_id, row in zip(ids, rows) if (record := _record(webhook, event_id, row))]

    async def event(self, webhook: str, event_id: str) -> EventRecord | None:
        base = stream_key(self._prefix, webhook)[:-1]
        async with self._calling(self._worker_timeout):
            row = await self._redis().hmget(f"{base}e:{event_id}", LOG_FIELDS)
        return _record(webhook, event_id, row)

    async def replay(self, webhook: str, event_id: str) -> bool:
        return await self._replay(webhook, [event_id]) == 1

    async def replay_all(self, webhook: str, status: EventStatus) -> int:
        now = self._clock.now()
        key = f"{stream_key(self._prefix, webhook)[:-1]}s:{status.value}"
        async with self._calling(self._worker_timeout):
            members = await self._redis().zrangebyscore(key, f"({now!r}", "+inf")
        ids = [_text(member) for member in members]
        replayed = 0
        for start in range(0, len(ids), REPLAY_BATCH):
            replayed += await self._replay(webhook, ids[start:start + REPLAY_BATCH])
        return replayed

    # -- the DeliveryQueue protocol ---------------------------------------------------------------

    async def claim(self, webhook: str, consumer: str, count: int, visibility: float) -> list[Delivery]:
        # Now and then, forget the consumers of replicas that are gone (each start is a new one).
        monotonic = time.monotonic()
        prune = monotonic >= self._next_prune.get(webhook, 0.0)
        if prune:
            self._next_prune[webhook] = monotonic + PRUNE_INTERVAL
        rows = await self._run("claim", webhook, self._worker_timeout, consumer, count, _ms(visibility),
                               repr(self._clock.now()), "1" if prune else "0")
        return [Delivery(webhook=webhook, event_id=_text(event_id), attempt=int(attempt),
                         received_at=float(received_at), method=_text(method), query=_text(query),
                         headers=tuple((str(k), str(v)) for k, v in json.loads(headers)), body=bytes(body),
                         verified=_text(verified), token=_text(sid))
                for sid, event_id, attempt, received_at, method, query, headers, body, verified in rows]

    async def settle(self, delivery: Delivery, status: EventStatus, *, error: str = "",
                     retry_at: float = 0.0) -> bool:
        reply = await self._run("settle", delivery.webhook, self._worker_timeout, delivery.token, delivery.event_id,
                                status.value, repr(self._clock.now()), error, repr(retry_at), delivery.attempt)
        return int(reply) == 1

    async def release(self, deliveries: list[Delivery]) -> None:
        by_webhook: dict[str, list[str | int]] = {}
        for delivery in deliveries:
            by_webhook.setdefault(delivery.webhook, []).extend((delivery.token, delivery.event_id, delivery.attempt))
        for webhook, pairs in by_webhook.items():
            await self._run("release", webhook, self._worker_timeout, repr(self._clock.now()), *pairs)

    async def wait_for_work(self, webhook: str, timeout: float) -> None:
        work = self._work.setdefault(webhook, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await work.wait()
        work.clear()

    async def start(self) -> None:
        """Connect and load the scripts; if Redis does not answer, start down and keep trying. Never raises."""
        self._client = connect(self._url, self._worker_timeout, max_connections=self._max_connections,
                               decode_responses=False)
        await self._first_connect("webhook events cannot be queued")

    async def close(self) -> None:
        """Stop the recovery and close the connections; never raises."""
        self._closing = True
        self._up = False
        await cancel_tasks(list(self._tasks))
        if self._client is not None:
            await close_quietly(self._client.aclose)

    # -- talking to Redis -------------------------------------------------------------------------

    async def _accept(self, mode: str, event: InboundEvent, window: float, retention: float,
                      kept: tuple[str | int | bytes, ...]) -> Accepted:
        """One run of webhook_accept.lua; ``mode``: "1" delivered, "0" queued, "h" hold."""
        payload = ("", "", "", "", "") if mode == "h" else (  # a hold stores no payload: not sent
            event.method, event.query, json.dumps(event.headers), event.body, event.verified)
        reply = await self._run(
            "accept", event.webhook, self._timeout,
            event.event_id or new_event_id(), dedupe_digest(event.dedupe_key), repr(self._clock.now()),
            _ms(window), _ms(retention), repr(event.received_at + retention), mode, repr(event.received_at),
            event.org, event.event_type, *payload, *kept)
        answer = KeptAnswer(int(reply[2]), _text(reply[3]), bytes(reply[4])) if len(reply) > 2 else None
        return Accepted(_text(reply[0]), int(reply[1]) == 1, answer)

    async def _replay(self, webhook: str, ids: Sequence[str]) -> int:
        replayed = int(await self._run("replay", webhook, self._worker_timeout, repr(self._clock.now()), *ids))
        if replayed:
            self._signal(webhook)
        return replayed

    async def _run(self, script: str, webhook: str, timeout: float, *args: Any) -> Any:
        """One EVALSHA of ``script`` on ``webhook``'s keys, within ``timeout``."""
        key = stream_key(self._prefix, webhook)
        async with self._calling(timeout):
            return await SCRIPTS.call(self._redis(), f"webhook_{script}", (key,), args)

    def _redis(self) -> aioredis.Redis:
        if not self._up or self._client is None:
            raise BackendUnavailable(f"Redis at {self._shown_url} is down")
        return self._client

    @contextlib.asynccontextmanager
    async def _calling(self, timeout: float) -> AsyncIterator[None]:
        """Redis failures as BackendUnavailable; one that proves Redis gone (not a mere timeout: this
        process's event loop may just be late) stops the calls until a PING finds Redis again."""
        try:
            with translated():
                async with asyncio.timeout(timeout):
                    yield
        except BackendTimeout:
            self._backend_failures += 1
            raise
        except BackendUnavailable as error:
            if error.__cause__ is None:  # raised by _redis(): already down
                raise
            self._backend_failures += 1
            if self._up and not self._closing:
                self._up = False
                log.warning("Redis at %s failed (%s): webhook events cannot be queued until it answers",
                            self._shown_url, describe(error))
                self._recovering()
            raise

    async def _connect(self) -> None:
        assert self._client is not None
        await reconnect(self._client)  # connections from before a restart are dead
        await SCRIPTS.load(self._client)
        self._up = True

    def _signal(self, webhook: str) -> None:
        self._work.setdefault(webhook, asyncio.Event()).set()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Any) -> float | None:
    text = _text(value) if value is not None else ""
    return float(text) if text else None


def _record(webhook: str, event_id: str, row: Sequence[Any]) -> EventRecord | None:
    """A log entry from an HMGET of :data:`LOG_FIELDS`; None when it expired."""
    status, attempts, received, last, completed, error, org, event_type = row
    if status is None:
        return None
    return EventRecord(id=event_id, webhook=webhook, status=EventStatus(_text(status)), attempts=int(attempts or 0),
                       received_at=_float(received) or 0.0, last_attempt_at=_float(last),
                       completed_at=_float(completed), error=_text(error or b""), org=_text(org or b""),
                       event_type=_text(event_type or b""))
