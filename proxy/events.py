"""Things that happened, as frozen values. Policy code emits them; metrics, Slack and Sentry
(later) consume them. Nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BreakerTransition:
    """A breaker changed state (or an operator changed it).

    Emitted once, by the process whose atomic update made the change: with a shared store,
    other replicas learn the new state but do not emit the event again.
    """

    key: str
    """``upstream/route``."""
    from_state: str
    to_state: str
    reason: str
    at: float
    open_until: float = 0.0
    forced_by: str = ""
