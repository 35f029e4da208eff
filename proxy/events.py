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


@dataclass(frozen=True)
class LimitDecision:
    """What one rate limit did to one request.

    ``outcome``: ``allowed``, ``rejected``, ``shadow_rejected`` (a shadow limit would have
    rejected), ``allowed_backend_down`` / ``rejected_backend_down`` (decided without the shared
    backend). A request a limit rejected counts only for the limits that rejected it.
    """

    upstream: str
    route: str
    limit: str
    outcome: str


@dataclass(frozen=True)
class UpstreamThrottled:
    """The upstream said "too many requests" (429, or Google's 403 ``rateLimitExceeded``)."""

    upstream: str
    route: str
    status: int
    reason: str
    retry_after: float | None
    """Seconds the upstream asked for, as honoured (capped); None when it gave none."""
