"""The Redis store: breakers shared by every replica, their rules run atomically in Lua.

The hot path does not wait on Redis. :meth:`RedisBreakerStore.view` answers from a local copy
of each breaker, kept fresh twice over: the script that changes a breaker also PUBLISHes its new
view, which every store receives (a newer version wins), and every ``refresh_interval`` one
pipelined read brings all known breakers up to date in case a message was lost. Outcomes wait
in a queue and leave in one pipeline per flush: every ``flush_interval``, or at once for a
probe's outcome (a half-open breaker waits for it) and for a failure that may open the breaker
(the fleet hears of it in milliseconds). Only probes and operator actions wait on Redis, and a
half-open breaker whose probe slots are taken says so locally until they may return.
Transitions go to the ``emit`` of the store whose script made them, so a fleet emits each one
exactly once.

When Redis fails the store stops calling it and serves everything from an embedded
:class:`MemoryBreakerStore`, seeded with the views it last knew (open and forced breakers stay
so). An error that proves Redis gone (refused, reset) does that at once; a call that only ran out
of time does it only after a PING also goes unanswered (``CONFIRM_FACTOR`` timeouts each): a late
event loop must never let this process admit probes that the fleet decides once. So a probe
admission waits on a hung Redis at most twice ``CONFIRM_FACTOR`` timeouts, once; a request that
merely timed out while Redis still answers is refused (the breaker is not closed anyway). A PING every ``retry_interval``
in the background notices Redis coming back: then the local state is dropped, every view is read
from Redis again (the source of truth) and the subscription resumes. An operator action taken
meanwhile applies to this process only and is not replayed: ``backend_up`` is False while it
happens, so the admin API can say so.

On a Redis Cluster (``redis+cluster://``) each breaker's hash lives on the master of its slot, a flush
is one pipeline per master, the confirming PING goes to the masters of the breakers the call waited
on, and the subscription sits on one node and moves when that node fails
(:mod:`proxy.state.redis.subscription` says why plain pub/sub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as _random
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis

from proxy.clock import Clock, SystemClock
from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition
from proxy.policy.breaker import Action, Admission, BreakerRecord, Random, State
from proxy.state.base import BackendTimeout, BackendUnavailable, BreakerView, TransitionEmit, ignore
from proxy.state.memory import MemoryBreakerStore
from proxy.state.redis import breaker_scripts as lua
from proxy.state.redis.client import (
    CONFIRM_FACTOR,
    RedisHealth,
    cancel_tasks,
    close_quietly,
    connect,
    describe,
    ping,
    reconnect,
    translated,
)
from proxy.state.redis.subscription import Subscription

log = logging.getLogger("resilience_proxy.state")

class RedisBreakerStore(RedisHealth):
    """Breakers in Redis hashes ``<prefix>{<breaker>}:breaker``, views published on ``<prefix>breakers``."""

    _what = "breakers"

    def __init__(self, redis_url: str, *, prefix: str = "rp:", clock: Clock | None = None,
                 random: Random = _random.random, timeout: float = 0.05, flush_interval: float = 0.05,
                 refresh_interval: float = 1.0, retry_interval: float = 1.0) -> None:
        super().__init__(redis_url, retry_interval)
        self._url = redis_url
        self._prefix = prefix
        self._channel = f"{prefix}breakers"
        self._clock = clock or SystemClock()
        self._random = random
        self._timeout = timeout
        self._flush_interval = flush_interval
        self._refresh_interval = refresh_interval
        self._client: aioredis.Redis | None = None
        self._subscription: Subscription | None = None
        self._views: dict[str, BreakerView] = {}
        self._changed_at: dict[str, int] = {}
        """Breaker -> ``_seq`` when its view last changed, so that an older read does not overwrite it."""
        self._seq = 0
        self._probes_taken: dict[str, tuple[int, float]] = {}
        """Breaker -> (version, open_until) of the half-open view in which Redis had no probe slot left."""
        self._batches = lua.Batches()
        self._queued = asyncio.Event()
        self._urgent = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._emit: TransitionEmit = ignore
        self._flusher: asyncio.Task[None] | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._fallback = self._new_fallback()
        self._admitting: dict[str, asyncio.Lock] = {}

    # -- the BreakerStore protocol ----------------------------------------------------------------

    def view(self, key: str) -> BreakerView:
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = BreakerView(key)
        return view if self._up else self._fallback.view(key)

    async def admit(self, key: str, policy: BreakerPolicy) -> Admission:
        if not self._up:
            return await self._fallback.admit(key, policy)
        decided = self._decided_locally(key, policy)
        if decided is not None:
            return decided
        # One admission per breaker in flight in this process: when an open breaker's time ends, a burst
        # of callers costs Redis the fleet's probe slots plus one refusal, not a round trip each.
        async with self._admitting.setdefault(key, asyncio.Lock()):
            if not self._up:
                return await self._fallback.admit(key, policy)
            decided = self._decided_locally(key, policy)
            if decided is not None:
                return decided
            return await self._ask(key, policy)

    def _decided_locally(self, key: str, policy: BreakerPolicy) -> Admission | None:
        """What the view already decides, at no round trip; None for a request that may be a probe."""
        view, now = self.view(key), self._clock.now()
        if view.admits_freely:
            return Admission(True)
        if view.state == State.FORCED_OPEN:
            return Admission(False, retry_after=policy.open_for)
        if view.state == State.OPEN and now < view.open_until:
            return Admission(False, retry_after=view.open_until - now)
        if view.state == State.HALF_OPEN and now < view.open_until and \
                self._probes_taken.get(key) == (view.version, view.open_until):
            return Admission(False, retry_after=max(view.open_until - now, 1.0))  # no slot returns before
        return None

    async def _ask(self, key: str, policy: BreakerPolicy) -> Admission:
        """Redis decides whether this request is a probe. Only a confirmed outage lets this process decide
        alone: a call that merely ran late (a busy event loop, a cold pool) may still have taken a slot."""
        try:
            with translated():
                async with asyncio.timeout(self._timeout * CONFIRM_FACTOR):
                    (reply,) = await self._run([("admit", key, policy, ())])
        except BackendTimeout as error:
            if await self._outage_confirmed(error, keys=[key]):
                return await self._fallback.admit(key, policy)
            return Admission(False, retry_after=1.0)  # Redis answers: whether this call took a slot is unknown
        except BackendUnavailable as error:
            self._down(error)
            return await self._fallback.admit(key, policy)
        transitions = self._apply(key, reply)
        admission = lua.admission_from(reply[2], transitions[0] if transitions else None)
        fresh = lua.view_from(key, reply[0])
        if not admission.allowed and fresh.state == State.HALF_OPEN:
            self._probes_taken[key] = (fresh.version, fresh.open_until)
        return admission

    def record(self, key: str, policy: BreakerPolicy, failed: bool, probe: bool) -> None:
        if not self._up:
            self._fallback.record(key, policy, failed, probe)
            return
        if self._batches.add(key, policy, failed, probe, self._clock.now(), self.view(key)):
            self._urgent.set()
        self._queued.set()

    async def force(self, key: str, policy: BreakerPolicy, action: Action, actor: str) -> BreakerTransition:
        """Apply an override for the fleet; with Redis down, for this process only (``backend_up`` is False)."""
        async with self._send_lock:
            await self._send_queued()  # outcomes recorded before the action count before it
            if self._up:
                try:
                    with translated():
                        async with asyncio.timeout(self._timeout):
                            (reply,) = await self._run([("force", key, policy, (action.value, actor))])
                except BackendUnavailable as error:
                    await self._failed(error, [key])
                else:
                    return self._apply(key, reply)[0]
        return await self._fallback.force(key, policy, action, actor)

    async def views(self, keys: list[str]) -> list[BreakerView]:
        if self._up:
            try:
                with translated():
                    return await self._refresh(keys)
            except BackendUnavailable as error:
                await self._failed(error, keys)
        return await self._fallback.views(keys)

    async def flush(self) -> None:
        async with self._send_lock:
            await self._send_queued()

    def emit_to(self, emit: TransitionEmit) -> None:
        self._emit = emit

    async def start(self) -> None:
        """Connect and subscribe; if Redis does not answer, start on local state and keep trying."""
        # Connections and replies may take the confirmation's time: giving up is the callers' decision.
        self._client = connect(self._url, self._timeout * CONFIRM_FACTOR)
        self._flusher = self._spawn(self._flush_loop())
        self._spawn(self._refresh_loop())
        await self._first_connect("breakers run on local state")

    async def close(self) -> None:
        """Send the queued outcomes, stop the background tasks, close the connections."""
        self._closing = True
        async with self._send_lock:  # a batch on its way arrives first
            if self._flusher is not None:
                await cancel_tasks([self._flusher])
            await self._send_queued()
        await cancel_tasks(list(self._tasks))
        await self._drop_subscription()
        if self._client is not None:
            await close_quietly(self._client.aclose)

    # -- talking to Redis -------------------------------------------------------------------------

    async def _run(self, calls: Sequence[lua.Call]) -> list[Any]:
        assert self._client is not None
        return await lua.run(self._client, self._prefix, self._channel, calls, self._clock.now(), self._random)

    async def _read(self, keys: Sequence[str]) -> list[BreakerView]:
        assert self._client is not None
        return await lua.read(self._client, self._prefix, keys)

    async def _refresh(self, keys: Sequence[str]) -> list[BreakerView]:
        """Read ``keys`` and take what Redis says (even an older version: Redis may have restarted empty),
        unless a newer view arrived while the read was on its way."""
        asked_at = self._seq
        views = await self._read(keys)
        for view in views:
            if self._changed_at.get(view.key, 0) <= asked_at:
                self._set(view)
        return views

    async def _send_queued(self) -> None:
        """Send every queued outcome in one pipeline (the caller holds ``_send_lock``)."""
        calls = self._batches.take()
        self._queued.clear()
        self._urgent.clear()
        if not calls:
            return
        if not self._up:
            self._replay(calls)
            return
        try:
            with translated():
                replies = await self._run(calls)
        except BackendTimeout as error:
            if await self._outage_confirmed(error, unsent=calls, keys=[key for _, key, _, _ in calls]):
                return
            # Redis answers: the scripts may have run, so replaying them here could count twice.
            log.warning("breaker outcomes of %d calls may not have reached Redis (no answer in time)", len(calls))
            return
        except BackendUnavailable as error:
            self._down(error, unsent=calls)
            return
        for (_, key, _, _), reply in zip(calls, replies):
            self._apply(key, reply)

    # -- the local views --------------------------------------------------------------------------

    def _set(self, view: BreakerView) -> None:
        self._seq += 1
        self._changed_at[view.key] = self._seq
        self._views[view.key] = view

    def _apply(self, key: str, reply: list[Any]) -> list[BreakerTransition]:
        """Take the view a script returned and emit the transitions it made."""
        view = lua.view_from(key, reply[0])
        current = self._views.get(key)
        if current is None or view.version >= current.version:
            self._set(view)
        transitions = lua.transitions_from(key, reply[1])
        for transition in transitions:
            self._emit(transition)
        return transitions

    def _on_message(self, data: str) -> None:
        try:
            view = lua.view_from_message(data)
        except ValueError:
            log.warning("ignored a malformed message on %s: %.200r", self._channel, data)
            return
        current = self._views.get(view.key)
        if current is None or view.version > current.version:
            self._set(view)

    # -- background tasks -------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._queued.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._urgent.wait()
            try:
                await self.flush()
            except Exception:
                log.exception("sending breaker outcomes to Redis failed")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            if self._up and self._views:
                keys = list(self._views)
                try:
                    with translated():
                        await self._refresh(keys)
                except BackendUnavailable as error:
                    await self._failed(error, keys)

    async def _subscribe_loop(self, subscription: Subscription) -> None:
        try:
            await subscription.listen(self._on_message, self._refresh_interval, self._read_all)
        except BackendUnavailable as error:
            self._down(error)

    async def _read_all(self) -> None:
        """Read every known breaker (the subscription moved: what was published meanwhile reached no one here)."""
        await self._refresh(list(self._views))

    # -- losing and regaining Redis ---------------------------------------------------------------

    async def _connect(self) -> None:
        """PING, load the scripts, subscribe, read every known view; then serve from Redis again."""
        assert self._client is not None
        await self._drop_subscription()
        await reconnect(self._client)  # connections from before a restart are dead
        await lua.SCRIPTS.load(self._client)
        subscription = Subscription(self._client, self._channel)
        try:
            await subscription.open()
            views = await self._read(list(self._views))
        except BaseException:
            await subscription.close()
            raise
        self._subscription = subscription
        self._probes_taken.clear()
        for view in views:
            self._set(view)
        self._fallback = self._new_fallback()
        self._up = True
        self._subscriber = self._spawn(self._subscribe_loop(subscription))

    async def _failed(self, error: BackendUnavailable, keys: Sequence[str]) -> None:
        """A failed call on ``keys``: an error that proves Redis gone takes the store down; a timeout only
        once confirmed."""
        if isinstance(error, BackendTimeout):
            await self._outage_confirmed(error, keys=keys)
        else:
            self._down(error)

    async def _outage_confirmed(self, error: BackendTimeout, unsent: Sequence[lua.Call] = (),
                                keys: Sequence[str] = ()) -> bool:
        """After a timeout, a PING allowed ``CONFIRM_FACTOR`` times the timeout says whether Redis is gone;
        only then does this process decide alone (``_down``). True when it is down. In a cluster the PING
        goes to the masters of ``keys``' breakers: the nodes the call waited on."""
        self._backend_failures += 1
        if not self._up:
            self._replay(unsent)
            return True
        assert self._client is not None
        try:
            with translated():
                async with asyncio.timeout(self._timeout * CONFIRM_FACTOR):
                    await ping(self._client, [lua.hash_key(self._prefix, key) for key in keys])
        except BackendUnavailable as confirmed:
            self._down(confirmed if not isinstance(confirmed, BackendTimeout) else error, unsent)
            return True
        return False

    def _down(self, error: BaseException, unsent: Sequence[lua.Call] = ()) -> None:
        """Stop calling Redis: serve from local state, starting from the views known so far."""
        self._backend_failures += 1
        if not self._up or self._closing:
            self._replay(unsent)
            return
        self._up = False
        log.warning("Redis at %s failed (%s): breakers run on local state until it answers",
                    self._shown_url, describe(error))
        for key, view in self._views.items():
            self._fallback.restore(key, BreakerRecord(
                state=view.state, failures=view.failures, open_until=view.open_until, reason=view.reason,
                forced_by=view.forced_by, changed_at=view.changed_at, version=view.version))
        self._replay([*unsent, *self._batches.take()])
        if self._subscriber is not None and self._subscriber is not asyncio.current_task():
            self._subscriber.cancel()
        self._recovering()

    def _replay(self, calls: Iterable[lua.Call]) -> None:
        """Hand outcomes that did not reach Redis to the local fallback."""
        for _, key, policy, outcomes in calls:
            for code in outcomes[::2]:
                self._fallback.record(key, policy, bool(int(code) & 1), bool(int(code) & 2))

    def _new_fallback(self) -> MemoryBreakerStore:
        fallback = MemoryBreakerStore(clock=self._clock, random=self._random)
        fallback.emit_to(self._emit_fallback)
        return fallback

    def _emit_fallback(self, transition: BreakerTransition) -> None:
        self._emit(transition)  # read at each call: ``emit_to`` may come after the fallback was made

    async def _drop_subscription(self) -> None:
        if self._subscriber is not None:
            await cancel_tasks([self._subscriber])
            self._subscriber = None
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.close()
