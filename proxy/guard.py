"""Per-request orchestration: breaker admission, the attempt loop, outcome reporting.

A closed breaker is decided from the store's local view, without I/O; only a breaker that is
not closed asks the store (which admits the fleet's probes atomically). Every attempt's
outcome, read at the response head, feeds the breaker. Retries follow the pure rules of
:mod:`proxy.policy.retry`; tenacity runs the loop (attempts, waits, the hook before each sleep).
The web layer supplies the attempt itself, so nothing here touches HTTP.
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, stop_never

from proxy.clock import Clock, SystemClock
from proxy.config.model import BreakerId, Route, Upstream
from proxy.config.policy_values import CONNECT_ERROR, RESET, TIMEOUT, BreakerPolicy, RetryPolicy
from proxy.errors import CircuitOpen, ProxyError, UpstreamConnectError, UpstreamTimeout
from proxy.events import AttemptEnded, CircuitRejected, RetryDecided
from proxy.policy.breaker import State
from proxy.policy.classify import Outcome, classify
from proxy.policy.retry import AttemptResult, Decision, RetryBudget, decide, parse_retry_after, retryable
from proxy.state.base import BreakerStore

_NOT_REACHED = frozenset({"connection_refused", "dns_error", "connection_timeout"})
_ASK = object()
"""The local view cannot decide: the store must be asked."""


@dataclass(frozen=True)
class Ticket:
    """A request admitted through a breaker, to be reported when its attempt ends."""

    key: str
    policy: BreakerPolicy
    failure_statuses: frozenset[int]
    probe: bool


@dataclass
class Attempt:
    """One attempt as the web layer reports it."""

    status: int = 0
    """The upstream's status; 0 when there was no answer."""
    error: ProxyError | None = None
    retry_after: str | None = None
    seconds: float = 0.0
    """To the response head."""
    answer: Any = None
    """The upstream response, for the web layer to relay."""
    body: bytes | None = None
    """The answer's body when it was read whole to be understood (a small error body)."""
    throttled: bool = False
    """The upstream said "slow down" (429, or a 403 whose body gives a throttling reason)."""
    discard: Callable[[], None] = field(default=lambda: None)
    """Lets go of ``answer`` when another attempt replaces it."""


Send = Callable[[float], Awaitable[Attempt]]
"""Makes one attempt with the given timeout."""


def as_result(attempt: Attempt, now: float) -> AttemptResult:
    """The facts the retry rules need about an attempt."""
    error = attempt.error
    if error is None:
        return AttemptResult(attempt.status, retry_after=parse_retry_after(attempt.retry_after, now),
                             throttled=attempt.throttled)
    if error.proxy_status in _NOT_REACHED:
        return AttemptResult(CONNECT_ERROR, reached_upstream=False)
    if isinstance(error, UpstreamTimeout):
        return AttemptResult(TIMEOUT)
    if isinstance(error, UpstreamConnectError):
        return AttemptResult("tls_error", reached_upstream=False)
    return AttemptResult(RESET)


class Guard:
    def __init__(self, store: BreakerStore, *, clock: Clock | None = None,
                 random: Callable[[], float] = _random.random, emit: Callable[[object], None] = lambda _: None) -> None:
        self.store = store
        self._emit = emit
        self._clock = clock or SystemClock()
        self._random = random
        self._budgets: dict[str, RetryBudget] = {}

    async def run(self, upstream: Upstream, route: Route, method: str, replayable: bool,
                  has_idempotency_header: bool, send: Send) -> tuple[Attempt, int]:
        """Attempts until one is final; returns it and how many were made. Raises CircuitOpen when
        the breaker rejects the first attempt, or rejects a retry after the breaker opened meanwhile."""
        policy = route.retry
        timeout = policy.per_try_timeout or upstream.timeout
        if not policy.attempts or not replayable:
            return await self._attempt(upstream, route, send, timeout), 1
        budget = self._budget(BreakerId.of(upstream, route).key, policy)
        budget.record_request(self._clock.now())
        first = await self._attempt(upstream, route, send, timeout)
        if not retryable(policy, as_result(first, 0.0)):
            return first, 1  # the usual case: a healthy answer costs no retry machinery
        return await self._retry(upstream, route, method, has_idempotency_header, send, first, budget)

    async def _attempt(self, upstream: Upstream, route: Route, send: Send, timeout: float, number: int = 1) -> Attempt:
        """One attempt through the breaker, its outcome reported to it."""
        ticket = self.admit_freely(upstream, route)
        if ticket is _ASK:
            ticket = await self.enter(upstream, route)
        result = await send(timeout)
        self.leave(ticket, result.status, result.error, result.seconds)
        self._emit(AttemptEnded(upstream.name, route.name, number, result.status,
                                result.error.proxy_status if result.error else None, result.seconds))
        return result

    def _budget(self, key: str, policy: RetryPolicy) -> RetryBudget:
        budget = self._budgets.get(key)
        if budget is None or (budget.ratio, budget.min_per_second) != (policy.budget_ratio,
                                                                      policy.budget_min_per_second):
            budget = self._budgets[key] = RetryBudget(policy.budget_ratio, policy.budget_min_per_second)
        return budget

    async def _retry(self, upstream: Upstream, route: Route, method: str, has_idempotency_header: bool,
                     send: Send, first: Attempt, budget: RetryBudget) -> tuple[Attempt, int]:
        """Tenacity's loop, resuming from a first attempt that the rules may want repeated."""
        policy = route.retry
        key = BreakerId.of(upstream, route).key
        started = time.monotonic() - first.seconds
        pending, made = [first], 1
        decision = Decision(False)

        async def next_attempt() -> Attempt:
            nonlocal made
            if pending:
                return pending.pop()
            made += 1
            left = policy.deadline - (time.monotonic() - started)
            return await self._attempt(upstream, route, send,
                                       max(0.001, min(policy.per_try_timeout or upstream.timeout, left)), made)

        def should_retry(state: RetryCallState) -> bool:
            nonlocal decision
            assert state.outcome is not None
            if state.outcome.failed:
                return False
            result = as_result(state.outcome.result(), self._clock.now())
            decision = decide(policy, method, result, state.attempt_number, time.monotonic() - started,
                              has_idempotency_header, self._random)
            if decision.retry and not self.store.view(key).admits_freely:
                decision = Decision(False, reason="breaker open")
            if decision.retry and not budget.try_retry(self._clock.now()):
                decision = Decision(False, reason="retry budget exhausted")
            if decision.reason != "not retryable":
                self._emit(RetryDecided(upstream.name, route.name, decision.retry,
                                        str(result.kind) if decision.retry else decision.reason, decision.delay))
            return decision.retry

        def let_go(state: RetryCallState) -> None:
            assert state.outcome is not None
            state.outcome.result().discard()

        retrying = AsyncRetrying(retry=should_retry, wait=lambda _: decision.delay, stop=stop_never,
                                 before_sleep=let_go, reraise=True)
        final: Attempt = await retrying(next_attempt)
        return final, made

    def admit_freely(self, upstream: Upstream, route: Route) -> Ticket | None | object:
        """The ticket when the local view decides (no breaker, or a closed one); ``_ASK`` otherwise."""
        policy = route.breaker
        if policy is None:
            return None
        key = BreakerId.of(upstream, route).key
        if self.store.view(key).admits_freely:
            return Ticket(key, policy, route.failure_statuses, probe=False)
        return _ASK

    async def enter(self, upstream: Upstream, route: Route) -> Ticket | None:
        """Admit the request or raise CircuitOpen; None when the route has no breaker."""
        policy = route.breaker
        if policy is None:
            return None
        breaker = BreakerId.of(upstream, route)
        key = breaker.key
        view = self.store.view(key)
        if view.admits_freely:
            return Ticket(key, policy, route.failure_statuses, probe=False)
        admission = await self.store.admit(key, policy)
        if admission.allowed:
            return Ticket(key, policy, route.failure_statuses, probe=admission.probe)
        self._emit(CircuitRejected(upstream.name, route.name))
        forced = self.store.view(key)
        how = f"forced open by {forced.forced_by}" if forced.state == State.FORCED_OPEN else "open"
        raise CircuitOpen(f"circuit {breaker.name} {how}", upstream=upstream.name,
                          retry_after=max(1, math.ceil(admission.retry_after)))

    def leave(self, ticket: Ticket | None, status: int, error: ProxyError | None, seconds: float) -> None:
        """Report how the attempt went; requests the sidecar refused itself are not counted."""
        if ticket is None:
            return
        outcome = classify(status, error, ticket.failure_statuses, seconds=seconds,
                           slow_call=ticket.policy.slow_call)
        if outcome != Outcome.IGNORED:
            self.store.record(ticket.key, ticket.policy, outcome == Outcome.FAILURE, ticket.probe)
