"""The last breaker transitions, fleet-wide, with their reasons: the status page's history.

Two sources, because a store emits a transition only in the process whose update made it
(:mod:`proxy.state.base`): this process's transitions arrive as events, with their reasons; those
made by other replicas show up as a changed view of the shared state, which :meth:`TransitionLog.observe`
compares with the state last known. A view that changed twice between two looks (open, then
half-open, then open again elsewhere) counts as one transition, from the state known to the state
seen, with the view's latest reason.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.config.model import BreakerId
from proxy.events import BreakerTransition
from proxy.state.base import BreakerView

KEEP = 50
"""Transitions kept (the page shows them all)."""


@dataclass(frozen=True)
class Seen:
    """One transition as the status page lists it."""

    upstream: str
    route: str
    from_state: str
    to_state: str
    reason: str
    at: float
    """When it happened (epoch seconds, the clock of the replica that made it)."""
    open_until: float
    here: bool
    """Made by this process (else seen in the shared state: another replica made it)."""


class TransitionLog:
    """The newest :data:`KEEP` transitions, each told once whichever way it was learnt."""

    def __init__(self, keep: int = KEEP) -> None:
        self._entries: deque[Seen] = deque(maxlen=keep)
        self._known: dict[str, tuple[str, float]] = {}
        """Breaker key -> (state, changed_at) last recorded or seen."""

    def record(self, transition: BreakerTransition) -> Seen:
        """A transition this process made (the bus's event)."""
        self._known[transition.key] = (transition.to_state, transition.at)
        return self._add(transition.key, transition.from_state, transition.to_state, transition.reason,
                         transition.at, transition.open_until, here=True)

    def observe(self, views: Iterable[BreakerView], now: float) -> list[Seen]:
        """Compare the current views with what is known; the transitions they reveal, oldest first.
        The first look at a breaker only learns its state. ``now``: the time of a change whose view
        says none (a breaker the shared store no longer holds, e.g. after Redis lost its data)."""
        found = []
        for view in views:
            state, changed_at = view.state.value, view.changed_at
            known = self._known.get(view.key)
            if known == (state, changed_at):
                continue
            self._known[view.key] = (state, changed_at)
            if known is not None:
                reason = view.reason or ("no longer in the shared state" if not changed_at else "")
                found.append(self._add(view.key, known[0], state, reason, changed_at or now, view.open_until,
                                       here=False))
        return found

    def recent(self) -> list[Seen]:
        """Newest first."""
        return list(reversed(self._entries))

    def _add(self, key: str, from_state: str, to_state: str, reason: str, at: float, open_until: float,
             here: bool) -> Seen:
        breaker = BreakerId.parse(key)
        seen = Seen(breaker.upstream, breaker.route, from_state, to_state, reason, at, open_until, here)
        self._entries.append(seen)
        return seen
