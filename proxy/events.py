"""Things that happened, as frozen values, and the bus that hands them to whoever listens.

Policy and data-plane code emit them; metrics, logs, Slack and Sentry consume them
(:mod:`proxy.observe`). Listeners run inline on the request path, so they must be quick and
never block: a listener that talks to the network queues the event and returns.

The two events every request makes (:class:`AttemptEnded`, :class:`RequestEnded`) are named tuples,
the others frozen dataclasses: both are immutable values read by field name, and a frozen
dataclass's ``__init__`` sets each field through ``object.__setattr__``, about four times what a
tuple costs (bench/README.md, issue 16).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

log = logging.getLogger("resilience_proxy.events")


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


class AttemptEnded(NamedTuple):
    """One attempt at the upstream: its status (0 when it got no answer) or the sidecar's error type."""

    upstream: str
    route: str
    number: int
    """1 for the first try."""
    status: int
    error: str | None
    """The Proxy-Status error type when the attempt failed without an answer."""
    seconds: float


@dataclass(frozen=True)
class RetryDecided:
    """After an attempt the retry rules could repeat: whether they did, and why.

    ``reason`` is what was retried (``503``, ``timeout``, ``connect_error``) when ``retried``, and
    why not otherwise: ``attempts exhausted``, ``not idempotent``, ``retry-after too long``,
    ``deadline``, ``breaker open``, ``retry budget exhausted``.
    """

    upstream: str
    route: str
    retried: bool
    reason: str
    delay: float = 0.0


@dataclass(frozen=True)
class CircuitRejected:
    """A request failed fast: the route's breaker was open."""

    upstream: str
    route: str


class RequestEnded(NamedTuple):
    """A request's answer went out (or the client went away)."""

    request_id: str
    upstream: str | None
    """None when no upstream prefix matched."""
    route: str | None
    method: str
    status: int
    seconds: float
    attempts: int
    error: str | None = None
    """The Proxy-Status error type when the sidecar answered itself."""
    message: str = ""
    """The sidecar's error message (never a header, body or query string)."""


@dataclass(frozen=True)
class BackendChanged:
    """The shared state backend stopped or started answering."""

    backend: str
    up: bool
    at: float


Listener = Callable[[object], None]


class EventBus:
    """Hands every event to its listeners, in order; a failing listener is logged and skipped.

    A listener may name the event types it wants: the two events of every request (RequestEnded,
    AttemptEnded) then skip the listeners that would only look at them and return."""

    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, frozenset[type] | None]] = []
        self._routes: dict[type, tuple[Listener, ...]] = {}

    def subscribe(self, listener: Listener, types: Iterable[type] | None = None) -> None:
        """``types``: the event types ``listener`` gets (None: every event)."""
        self._listeners.append((listener, None if types is None else frozenset(types)))
        self._routes.clear()

    def emit(self, event: object) -> None:
        kind = type(event)
        listeners = self._routes.get(kind)
        if listeners is None:
            listeners = self._routes[kind] = tuple(
                listener for listener, types in self._listeners if types is None or kind in types)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed", extra={"event": kind.__name__})


@dataclass(frozen=True)
class AlertSent:
    """An alert left (or failed to leave) for a channel: ``result`` is ``sent``, ``dropped`` or ``failed``."""

    channel: str
    kind: str
    result: str


@dataclass(frozen=True)
class ConfigReloaded:
    """A new config was applied (``ok``) or refused whole (``error``); the old one keeps serving then."""

    result: str
    message: str = ""
    problems: tuple[str, ...] = ()
    """Each as ``file:line:col: key.path: what is wrong``."""
    trigger: str = ""
    """``file``, ``signal`` or ``admin``."""


@dataclass(frozen=True)
class WebhookReceived:
    """The webhooks listener answered a provider.

    ``result``: ``accepted``, ``duplicate``, ``rejected_signature``, ``too_large``,
    ``rejected_backend``, ``passthrough``, ``delivered_sync``.
    """

    webhook: str
    result: str
    seconds: float
    """From request start to the provider's answer."""


@dataclass(frozen=True)
class WebhookAttempted:
    """One delivery attempt to the app: ``result`` is ``completed``, ``failed`` or ``dead_letter``."""

    webhook: str
    attempt: int
    """1 for the first try."""
    result: str
    status: int
    """The app's status; 0 when it gave no answer."""
    seconds: float


@dataclass(frozen=True)
class WebhookSettled:
    """An event reached its end: ``outcome`` is ``completed`` or ``dead_letter``."""

    webhook: str
    outcome: str
    attempts: int
    end_to_end: float
    """Seconds from received_at to now."""


@dataclass(frozen=True)
class WebhookReplayed:
    """An operator replayed ``count`` events of one webhook."""

    webhook: str
    count: int


@dataclass(frozen=True)
class WebhookQueueSampled:
    """A webhook's queue as its store reported it just now (sampled every few seconds, off the request path)."""

    webhook: str
    depth: int
    """Events waiting or in delivery."""
    oldest_pending_age: float | None
    """Seconds since the oldest undelivered event was received; None when none waits."""
