"""The delivery workers: take queued webhook events and deliver them to the app, at least once.

Per webhook, one loop claims as many events as it has free slots (``delivery.concurrency``)
and delivers each in its own task; :mod:`proxy.policy.delivery` says what an answer means and
when the next try goes. No replica owns an event: a claim is a lease of ``visibility`` seconds,
so the events of a replica that died (SIGKILL) are claimed by the others once it runs out.
:meth:`DeliveryWorkers.drain` stops claiming, lets deliveries under way finish within the grace
and hands back the rest, their attempt not counted. A store that cannot answer (Redis down)
makes a loop wait and try again, with backoff; it never ends the loop. Nothing here logs or
emits a body.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random as _random
import socket
import time
import uuid
from collections.abc import Callable, Sequence

import aiohttp

from proxy.clock import Clock, SystemClock
from proxy.config.webhooks import Webhook
from proxy.events import WebhookAttempted, WebhookSettled
from proxy.policy.delivery import (
    COMPLETED,
    DEAD_LETTER,
    LOST,
    Answer,
    Random,
    Schedule,
    judge,
)
from proxy.policy.retry import parse_retry_after
from proxy.state.base import BackendUnavailable
from proxy.state.webhooks import Delivery, DeliveryQueue, EventStatus
from proxy.web.webhook_forward import send

log = logging.getLogger("resilience_proxy.webhooks")

Emit = Callable[[object], None]

STORE_BACKOFF = (0.25, 5.0)
"""First and longest wait before asking a store that failed again."""


def schedule_of(hook: Webhook) -> Schedule:
    backoff = hook.delivery.backoff
    return Schedule(attempts=hook.delivery.attempts, initial=backoff.initial, multiplier=backoff.multiplier,
                    max_backoff=backoff.max)


def default_visibility(hook: Webhook) -> float:
    """How long a claim lasts: well past an attempt's timeout, so a live replica never loses one."""
    return max(30.0, 3 * hook.delivery.timeout)


def consumer_name() -> str:
    """Unique per process: this replica's name in the stream's consumer group."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class DeliveryWorkers:
    """Delivery loops for every configured webhook of one process."""

    def __init__(self, store: DeliveryQueue, webhooks: Callable[[], Sequence[Webhook]], emit: Emit, *,
                 consumer: str | None = None, visibility: float | None = None, poll_interval: float = 1.0,
                 clock: Clock | None = None, random: Random = _random.random) -> None:
        """``webhooks``: the current config's webhooks (read again at every poll, so reloads apply).
        ``visibility``: the claim lease; None: :func:`default_visibility`. ``poll_interval``: how often an
        idle loop looks for events accepted elsewhere and retries coming due."""
        self.store = store
        self.consumer = consumer or consumer_name()
        self._webhooks = webhooks
        self._emit = emit
        self._visibility = visibility
        self._poll_interval = poll_interval
        self._clock = clock or SystemClock()
        self._random = random
        self._session: aiohttp.ClientSession | None = None
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._claims: set[asyncio.Task[list[Delivery]]] = set()
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._freed: dict[str, asyncio.Event] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        self._reconcile()
        self._supervisor = asyncio.create_task(self._supervise())

    async def drain(self, grace: float) -> None:
        """Stop claiming; give deliveries under way up to ``grace`` seconds; hand back the rest."""
        self._stopping = True
        loops = [*self._loops.values(), *([self._supervisor] if self._supervisor else [])]
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        claimed: list[Delivery] = []
        for claim in list(self._claims):  # claims on their way when the loops stopped
            try:
                claimed += await claim
            except (Exception, asyncio.CancelledError) as error:  # noqa: BLE001  (nothing claimed: nothing to hand back)
                log.debug("a claim under way at the drain failed: %s", type(error).__name__)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=grace)
        unfinished = dict(self._in_flight)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        await self._release(claimed + list(unfinished.values()))

    async def close(self) -> None:
        if not self._stopping:
            await self.drain(0.0)
        if self._session is not None:
            await self._session.close()

    # -- the loops ----------------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """One loop per configured webhook: new ones start, removed ones stop (their events wait)."""
        names = {hook.name for hook in self._webhooks()}
        for name in names - self._loops.keys():
            self._loops[name] = asyncio.create_task(self._loop(name))
        for name in self._loops.keys() - names:
            self._loops.pop(name).cancel()

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            self._reconcile()

    def _hook(self, name: str) -> Webhook | None:
        return next((hook for hook in self._webhooks() if hook.name == name), None)

    async def _loop(self, name: str) -> None:
        freed = self._freed.setdefault(name, asyncio.Event())
        wait = STORE_BACKOFF[0]
        while True:
            hook = self._hook(name)
            if hook is None:
                return
            free = hook.delivery.concurrency - sum(1 for d in self._in_flight.values() if d.webhook == name)
            if free <= 0:
                freed.clear()
                await freed.wait()
                continue
            claim = asyncio.create_task(self.store.claim(name, self.consumer, free,
                                                         self._visibility or default_visibility(hook)))
            self._claims.add(claim)
            try:
                batch = await asyncio.shield(claim)
            except Exception as error:  # BackendUnavailable above all: never end the loop
                log.warning("webhook %s: cannot claim events (%s); trying again in %gs", name,
                            str(error) or type(error).__name__, wait, exc_info=not isinstance(error, BackendUnavailable))
                await asyncio.sleep(wait)
                wait = min(wait * 2, STORE_BACKOFF[1])
                continue
            finally:
                if claim.done():
                    self._claims.discard(claim)
            wait = STORE_BACKOFF[0]
            for delivery in batch:
                task = asyncio.create_task(self._deliver(hook, delivery))
                self._in_flight[task] = delivery
                task.add_done_callback(self._finished)
            if not batch:
                await self.store.wait_for_work(name, self._poll_interval)

    def _finished(self, task: asyncio.Task[None]) -> None:
        delivery = self._in_flight.pop(task, None)
        if delivery is not None:
            self._freed.setdefault(delivery.webhook, asyncio.Event()).set()

    # -- one attempt ----------------------------------------------------------------------------

    async def _deliver(self, hook: Webhook, delivery: Delivery) -> None:
        started = time.monotonic()
        try:
            answer = await self._send(hook, delivery)
        except Exception:  # a bug, or something aiohttp raised that we did not foresee: retried, never lost
            log.exception("webhook %s: delivering event %s failed", hook.name, delivery.event_id)
            answer = Answer(error=LOST)
        verdict = judge(schedule_of(hook), delivery.attempt, answer, self._random)
        self._emit(WebhookAttempted(hook.name, delivery.attempt, verdict.status, answer.status,
                                    time.monotonic() - started))
        settled = await self._settle(delivery, EventStatus(verdict.status), verdict.error,
                                     self._clock.now() + verdict.delay)
        if settled and verdict.status in (COMPLETED, DEAD_LETTER):
            self._emit(WebhookSettled(hook.name, verdict.status, delivery.attempt,
                                      max(0.0, self._clock.now() - delivery.received_at)))

    async def _send(self, hook: Webhook, delivery: Delivery) -> Answer:
        assert self._session is not None
        answer = await send(self._session, hook, method=delivery.method, query=delivery.query,
                            headers=delivery.headers, body=delivery.body, event_id=delivery.event_id,
                            attempt=delivery.attempt, verified=delivery.verified, read_body=False)
        return Answer(answer.status, error=answer.error,
                      retry_after=parse_retry_after(answer.retry_after, self._clock.now()))

    async def _settle(self, delivery: Delivery, status: EventStatus, error: str, retry_at: float) -> bool:
        """Record the outcome, trying again while the store is down; past the lease there is no point
        (another replica takes the event over and delivers it again: at least once)."""
        hook = self._hook(delivery.webhook)
        give_up = time.monotonic() + (self._visibility or (default_visibility(hook) if hook else 30.0))
        wait = STORE_BACKOFF[0]
        while True:
            try:
                return await self.store.settle(delivery, status, error=error, retry_at=retry_at)
            except BackendUnavailable as failure:
                if time.monotonic() + wait > give_up:
                    log.warning("webhook %s: outcome of event %s not recorded (%s); it will be delivered again",
                                delivery.webhook, delivery.event_id, failure)
                    return False
                await asyncio.sleep(wait)
                wait = min(wait * 2, STORE_BACKOFF[1])

    async def _release(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        try:
            await self.store.release(deliveries)
            log.info("handed back %d webhook events not delivered", len(deliveries))
        except BackendUnavailable as error:
            log.warning("could not hand back %d webhook events (%s); other replicas take them over after the "
                        "visibility timeout", len(deliveries), error)
