"""Per-request orchestration: breaker admission, the attempt loop, outcome reporting.

A closed breaker is decided from the store's local view, without I/O; only a breaker that is
not closed asks the store (which admits the fleet's probes atomically). Every attempt's
outcome, read at the response head, feeds the breaker; what it means is the classifier's call
(:mod:`proxy.policy.classify`). Retries follow the pure rules of :mod:`proxy.policy.retry`;
tenacity runs the loop (attempts, waits, the hook before each sleep), on the injected clock's
time and sleep. The caller hands in the attempt itself (a function and its inputs), so nothing
here touches HTTP, and gets the final :class:`Reply` back.

What a request needs from its route (the breaker's key, the ticket of a closed breaker, the timeout)
is worked out once per route (:class:`_Prepared`; routes are immutable). A first attempt that the
rules would not repeat, the usual case, never enters tenacity: the loop starts only when there is
something to retry, resuming from that first reply.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, stop_never

from proxy.clock import Clock, SystemClock
from proxy.config.model import BreakerId, Route, Upstream
from proxy.config.policy_values import BreakerPolicy, RetryPolicy
from proxy.errors import CircuitOpen, ProxyError
from proxy.events import AttemptEnded, CircuitRejected, RetryDecided
from proxy.policy.breaker import State
from proxy.policy.classify import BreakerCount, breaker_count, retry_facts
from proxy.policy.retry import Decision, RetryBudget, RetryFacts, decide, parse_retry_after, retryable
from proxy.state.base import BreakerStore

_ASK = object()
"""The local view cannot decide: the store must be asked."""
_PREPARED_MAX = 1_000
"""Routes prepared at once; past it (many reloads) the preparations start over."""


@dataclass(frozen=True)
class Ticket:
    """A request admitted through a breaker, to be reported when its attempt ends."""

    key: str
    policy: BreakerPolicy
    failure_statuses: frozenset[int]
    probe: bool


class _Prepared:
    """What every request of one route needs from it, worked out on its first request."""

    __slots__ = ("free", "key", "retries", "route", "timeout", "upstream")

    def __init__(self, upstream: Upstream, route: Route) -> None:
        self.upstream = upstream
        self.route = route
        self.key = BreakerId.of(upstream, route).key if route.retry.attempts or route.breaker is not None else ""
        self.free = None if route.breaker is None else Ticket(self.key, route.breaker, route.failure_statuses,
                                                                probe=False)
        """The ticket of every request a closed breaker admits (None: no breaker)."""
        self.timeout = route.retry.per_try_timeout or upstream.timeout
        self.retries = bool(route.retry.attempts)


@dataclass(slots=True)
class Reply:
    """One try at the upstream, up to its response head: the answer, or the failure that stood in for one."""

    status: int = 0
    """The upstream's status; 0 when there was no answer."""
    failure: ProxyError | None = None
    """Why there was no answer."""
    retry_after: str | None = None
    """The answer's Retry-After header, as sent."""
    seconds: float = 0.0
    """To the response head."""
    response: Any = None
    """The upstream response, for the web layer to relay (it has ``release()``)."""
    body: bytes | None = None
    """The answer's body when it was read whole to be understood (a small error body), as it came."""
    peeked: bytes | None = None
    """That body decoded, for the classifier."""
    throttle: str | None = None
    """Why the upstream said "slow down" (:func:`proxy.policy.classify.throttle_reason`); None if it did not."""
    number: int = 1
    """Which attempt this was (1 for the first): on the final reply, how many were made."""

    @property
    def error(self) -> str | None:
        """The Proxy-Status error type of the failure; None for an answer."""
        return self.failure.proxy_status if self.failure is not None else None

    def release(self) -> None:
        """Let go of the response (another attempt replaces it)."""
        if self.response is not None:
            self.response.release()


Call = TypeVar("Call")
AttemptFn = Callable[[Call, float], Awaitable[Reply]]
"""Makes one try with ``call``'s inputs and the given timeout; reports a failure in the reply, never raises one."""


class Guard:
    """The breakers and the retry loop around one request's attempts; one per process, across reloads
    (it keeps the retry budgets)."""

    def __init__(self, store: BreakerStore, *, clock: Clock | None = None,
                 random: Callable[[], float] = _random.random, emit: Callable[[object], None] = lambda _: None) -> None:
        self.store = store
        self._emit = emit
        self._clock = clock or SystemClock()
        self._random = random
        self._budgets: dict[str, RetryBudget] = {}
        self._prepared: dict[int, _Prepared] = {}
        """By ``id`` of the route (the entry holds the route, so the id stays its own)."""

    async def run(self, upstream: Upstream, route: Route, method: str, replayable: bool, has_idempotency_key: bool,
                  attempt: AttemptFn[Call], call: Call) -> Reply:
        """Attempts until one is final; returns it (``number`` says how many were made). Raises CircuitOpen
        when the breaker rejects the first attempt, or rejects a retry after the breaker opened meanwhile."""
        prepared = self._prepared.get(id(route))
        if prepared is None or prepared.route is not route or prepared.upstream is not upstream:
            prepared = self._prepare(upstream, route)
        if not (prepared.retries and replayable):
            return await self._attempt(prepared, attempt, call, prepared.timeout, 1)
        policy = route.retry
        budget = self._budget(prepared.key, policy)
        budget.record_request(self._clock.now())
        first = await self._attempt(prepared, attempt, call, prepared.timeout, 1)
        if not retryable(policy, retry_facts(first.status, first.error, None, first.throttle is not None)):
            return first  # the usual case: a healthy answer costs no retry machinery
        return await self._retry(prepared, method, has_idempotency_key, attempt, call, first, budget)

    def _prepare(self, upstream: Upstream, route: Route) -> _Prepared:
        if len(self._prepared) >= _PREPARED_MAX:
            self._prepared.clear()
        prepared = self._prepared[id(route)] = _Prepared(upstream, route)
        return prepared

    async def _attempt(self, prepared: _Prepared, attempt: AttemptFn[Call], call: Call, timeout: float,
                       number: int) -> Reply:
        """One attempt through the breaker, its outcome reported to it."""
        ticket = prepared.free
        if ticket is not None and not self.store.view(prepared.key).admits_freely:
            ticket = await self._enter(prepared.upstream, prepared.route, prepared.key)
        reply = await attempt(call, timeout)
        reply.number = number
        error = reply.error
        if ticket is not None:
            self._leave(ticket, reply.status, error, reply.seconds)
        self._emit(AttemptEnded(prepared.upstream.name, prepared.route.name, number, reply.status, error,
                                reply.seconds))
        return reply

    def _budget(self, key: str, policy: RetryPolicy) -> RetryBudget:
        budget = self._budgets.get(key)
        if budget is None or (budget.ratio, budget.min_per_second) != (policy.budget_ratio,
                                                                      policy.budget_min_per_second):
            budget = self._budgets[key] = RetryBudget(policy.budget_ratio, policy.budget_min_per_second)
        return budget

    def _facts(self, reply: Reply) -> RetryFacts:
        return retry_facts(reply.status, reply.error, parse_retry_after(reply.retry_after, self._clock.now()),
                           reply.throttle is not None)

    async def _retry(self, prepared: _Prepared, method: str, has_idempotency_key: bool,
                     attempt: AttemptFn[Call], call: Call, first: Reply, budget: RetryBudget) -> Reply:
        """Tenacity's loop, resuming from a first attempt that the rules may want repeated."""
        upstream, route, key = prepared.upstream, prepared.route, prepared.key
        policy = route.retry
        clock = self._clock
        started = clock.monotonic() - first.seconds
        pending, made = [first], 1
        decision = Decision(False)

        async def next_attempt() -> Reply:
            nonlocal made
            if pending:
                return pending.pop()
            made += 1
            left = policy.deadline - (clock.monotonic() - started)
            return await self._attempt(prepared, attempt, call, max(0.001, min(prepared.timeout, left)), made)

        def should_retry(state: RetryCallState) -> bool:
            nonlocal decision
            assert state.outcome is not None
            if state.outcome.failed:
                return False
            facts = self._facts(state.outcome.result())
            decision = decide(policy, method, facts, state.attempt_number, clock.monotonic() - started,
                              has_idempotency_key, self._random)
            if decision.retry and not self.store.view(key).admits_freely:
                decision = Decision(False, reason="breaker open")
            if decision.retry and not budget.try_retry(clock.now()):
                decision = Decision(False, reason="retry budget exhausted")
            if decision.reason != "not retryable":
                self._emit(RetryDecided(upstream.name, route.name, decision.retry,
                                        str(facts.kind) if decision.retry else decision.reason, decision.delay))
            return decision.retry

        def let_go(state: RetryCallState) -> None:
            assert state.outcome is not None
            state.outcome.result().release()

        retrying = AsyncRetrying(retry=should_retry, wait=lambda _: decision.delay, stop=stop_never,
                                 before_sleep=let_go, reraise=True, sleep=clock.sleep)
        return await retrying(next_attempt)  # type: ignore[no-any-return]

    async def _enter(self, upstream: Upstream, route: Route, key: str) -> Ticket | None:
        """Admit the request or raise CircuitOpen; None when the route has no breaker."""
        policy = route.breaker
        if policy is None:
            return None
        view = self.store.view(key)
        if view.admits_freely:
            return Ticket(key, policy, route.failure_statuses, probe=False)
        admission = await self.store.admit(key, policy)
        if admission.allowed:
            return Ticket(key, policy, route.failure_statuses, probe=admission.probe)
        self._emit(CircuitRejected(upstream.name, route.name))
        forced = self.store.view(key)
        how = f"forced open by {forced.forced_by}" if forced.state == State.FORCED_OPEN else "open"
        raise CircuitOpen(f"circuit {BreakerId.of(upstream, route).name} {how}", upstream=upstream.name,
                          retry_after=max(1, math.ceil(admission.retry_after)))

    def _leave(self, ticket: Ticket, status: int, error: str | None, seconds: float) -> None:
        """Report how the attempt went; requests the sidecar refused itself are not counted."""
        count = breaker_count(status, error, ticket.failure_statuses, seconds=seconds,
                              slow_call=ticket.policy.slow_call)
        if count is not BreakerCount.IGNORED:
            self.store.record(ticket.key, ticket.policy, count is BreakerCount.FAILURE, ticket.probe)
