"""Per-request breaker orchestration: ask before the attempt, report after it.

A closed breaker is decided from the store's local view, without I/O. Only a breaker that is
not closed asks the store (which admits the fleet's probes atomically).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxy.config.model import DEFAULT_ROUTE, Route, Upstream
from proxy.errors import CircuitOpen, ProxyError
from proxy.policy.breaker import BreakerPolicy, State
from proxy.policy.classify import Outcome, classify
from proxy.state.base import BreakerStore


def breaker_key(upstream: Upstream, route: Route) -> str:
    return f"{upstream.name}/{route.name}"


def breaker_name(upstream: Upstream, route: Route) -> str:
    """How operators and error messages name it: the route, or the upstream for its default route."""
    return upstream.name if route.name == DEFAULT_ROUTE else route.name


@dataclass(frozen=True)
class Ticket:
    """A request admitted through a breaker, to be reported when its attempt ends."""

    key: str
    policy: BreakerPolicy
    failure_statuses: frozenset[int]
    probe: bool


class BreakerGuard:
    def __init__(self, store: BreakerStore) -> None:
        self.store = store

    async def enter(self, upstream: Upstream, route: Route) -> Ticket | None:
        """Admit the request or raise CircuitOpen; None when the route has no breaker."""
        policy = route.breaker
        if policy is None:
            return None
        key = breaker_key(upstream, route)
        view = self.store.view(key)
        if view.admits_freely:
            return Ticket(key, policy, route.failure_statuses, probe=False)
        admission = await self.store.admit(key, policy)
        if admission.allowed:
            return Ticket(key, policy, route.failure_statuses, probe=admission.probe)
        name = breaker_name(upstream, route)
        forced = self.store.view(key)
        how = f"forced open by {forced.forced_by}" if forced.state == State.FORCED_OPEN else "open"
        raise CircuitOpen(f"circuit {name} {how}", upstream=upstream.name,
                          retry_after=max(1, math.ceil(admission.retry_after)))

    def leave(self, ticket: Ticket | None, status: int, error: ProxyError | None, seconds: float) -> None:
        """Report how the attempt went; requests the sidecar refused itself are not counted."""
        if ticket is None:
            return
        outcome = classify(status, error, ticket.failure_statuses, seconds=seconds,
                           slow_call=ticket.policy.slow_call)
        if outcome != Outcome.IGNORED:
            self.store.record(ticket.key, ticket.policy, outcome == Outcome.FAILURE, ticket.probe)
