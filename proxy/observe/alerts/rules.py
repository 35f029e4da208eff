"""What to tell the on-call channel, decided from bus events alone: pure, the clock passed in.

:class:`AlertRules` turns events (:mod:`proxy.events`) into alerts, the frozen values below; the
Slack module renders and sends them. Decisions use only what this process saw. Breaker
transitions are emitted once for the whole fleet (by the replica whose atomic update made them),
so a breaker's opening and its recovery are each told once; flap damping, error rates and backend
health are judged per process, so each replica may tell its own.

- A breaker opening (closed -> open) is told with its reason, the last error seen on its route and
  how long it stays open; a probe failing (half_open -> open) is the same outage, not told again.
- Its recovery (to closed from open or half_open) is told with the time since it opened, when
  this process saw the opening; another replica's opening leaves the downtime unknown.
- Operator overrides (forced_open, disabled, reset) are always told, with who did it.
- Openings, backend outages and error-rate crossings are damped by a :class:`FlapGate` per kind.
- A refused config reload is told with its first problems; the same problems again (a second
  SIGHUP on the same broken files) are not told twice, until a reload succeeds.
- An inbound webhook's event moving to dead_letter is told by the replica whose update moved it
  (``WebhookSettled`` is emitted once for the fleet): the first at once, then at most one summary
  with the count per ``flap_interval`` (:class:`CountGate`).
- A webhook's oldest undelivered event older than ``webhook_backlog_age`` is told, and its clearing;
  judged per process from the sampled queue stats (with Redis every replica sees the same queue, so
  each may tell it), damped by a :class:`FlapGate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import ClassVar

from proxy.clock import Clock
from proxy.config.model import BreakerId, SlackSettings
from proxy.events import (
    AttemptEnded,
    BackendChanged,
    BreakerTransition,
    ConfigReloaded,
    RequestEnded,
    WebhookQueueSampled,
    WebhookSettled,
)
from proxy.observe.alerts.damping import CountGate, FailureWindow, FlapGate, Flaps
from proxy.policy.classify import upstream_failed

CIRCUIT_OPEN = "destination_unavailable"
OPEN_STATES = frozenset({"open", "half_open"})
OVERRIDES = {"forced_open": "forced open", "disabled": "disabled", "closed": "reset"}


def describe_failure(status: int, error: str | None, message: str = "") -> str | None:
    """A short line for "last error", or None when this was no upstream error."""
    if error is not None:
        if upstream_failed(status, error) is None or error == CIRCUIT_OPEN:
            return None
        return f"{error}: {message}" if message else error
    return f"HTTP {status}" if status >= 500 else None


@dataclass(frozen=True)
class BreakerOpened:
    kind: ClassVar[str] = "breaker_open"
    upstream: str
    route: str
    reason: str
    open_for: float
    last_error: str | None = None


@dataclass(frozen=True)
class BreakerRecovered:
    kind: ClassVar[str] = "breaker_recovered"
    upstream: str
    route: str
    reason: str
    down_for: float | None
    """Since it opened; None when another replica opened it."""


@dataclass(frozen=True)
class BreakerOverridden:
    kind: ClassVar[str] = "breaker_override"
    upstream: str
    route: str
    action: str
    """``forced open``, ``disabled`` or ``reset``."""
    by: str
    was: str


@dataclass(frozen=True)
class BackendDown:
    kind: ClassVar[str] = "backend_down"
    backend: str


@dataclass(frozen=True)
class BackendUp:
    kind: ClassVar[str] = "backend_up"
    backend: str
    down_for: float | None


@dataclass(frozen=True)
class ErrorRate:
    """An upstream's failure share crossed ``threshold`` (``high``) or fell back below it."""

    kind: ClassVar[str] = "error_rate"
    upstream: str
    high: bool
    failures: int
    requests: int
    window: float
    threshold: float


@dataclass(frozen=True)
class Flapping:
    """A summary of what a damped key did: ``subject`` is ``breaker``, ``backend``, ``error_rate``
    or ``webhook_backlog``."""

    kind: ClassVar[str] = "flapping"
    subject: str
    name: str
    downs: int
    window: float
    now: str
    """The state now, in words: ``closed``, ``open``, ``down``, ``up``, ``above``, ``below``."""


@dataclass(frozen=True)
class ConfigRefused:
    """A reload found problems; the config that ran before keeps running."""

    kind: ClassVar[str] = "config_refused"
    problems: tuple[str, ...]
    """``file:line:col: key.path: what is wrong``."""
    trigger: str


@dataclass(frozen=True)
class WebhookDeadLetters:
    """Events of a webhook moved to dead_letter: the first one (``window`` None), or a summary of
    ``count`` more over the last ``window`` seconds."""

    kind: ClassVar[str] = "webhook_dead_letters"
    webhook: str
    count: int
    window: float | None = None


@dataclass(frozen=True)
class WebhookBacklog:
    """A webhook's oldest undelivered event passed ``threshold`` seconds (``high``), or the backlog cleared."""

    kind: ClassVar[str] = "webhook_backlog"
    webhook: str
    high: bool
    age: float
    depth: int
    threshold: float


Alert = (BreakerOpened | BreakerRecovered | BreakerOverridden | BackendDown | BackendUp | ErrorRate | Flapping
         | ConfigRefused | WebhookDeadLetters | WebhookBacklog)


class AlertRules:
    """Every alert decision: feed it events with :meth:`on_event`, ask :meth:`due` now and then."""

    def __init__(self, settings: SlackSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._breakers = FlapGate(settings.flap_interval)
        self._backends = FlapGate(settings.flap_interval)
        self._rates = FlapGate(settings.flap_interval)
        self._dead_letters = CountGate(settings.flap_interval)
        self._backlogs = FlapGate(settings.flap_interval)
        self._backlogged: set[str] = set()
        self._opened_at: dict[str, float] = {}
        self._states: dict[str, str] = {}
        self._last_errors: dict[str, str] = {}
        self._down_since: dict[str, float] = {}
        self._windows: dict[str, FailureWindow] = {}
        self._high: set[str] = set()
        self._refused: tuple[str, ...] | None = None
        self._handlers: dict[type, Callable[[object], list[Alert]]] = {
            RequestEnded: self._request_ended,  # type: ignore[dict-item]
            AttemptEnded: self._attempt_ended,  # type: ignore[dict-item]
            BreakerTransition: self._transition,  # type: ignore[dict-item]
            BackendChanged: self._backend,  # type: ignore[dict-item]
            ConfigReloaded: self._reloaded,  # type: ignore[dict-item]
            WebhookSettled: self._settled,  # type: ignore[dict-item]
            WebhookQueueSampled: self._backlog,  # type: ignore[dict-item]
        }

    def on_event(self, event: object) -> list[Alert]:
        """Alerts to send now; cheap for the per-request events, which most are."""
        handler = self._handlers.get(type(event))
        return handler(event) if handler is not None else []

    def last_error(self, key: str) -> str | None:
        """The last upstream error seen on ``upstream/route``."""
        return self._last_errors.get(key)

    def complete(self, alert: Alert) -> Alert:
        """Fill in what was not known when the alert was made.

        With the embedded store the transition comes before the AttemptEnded of the call that
        tripped the breaker, so an opening's last error is looked up when the message leaves.
        """
        if isinstance(alert, BreakerOpened) and alert.last_error is None:
            error = self._last_errors.get(f"{alert.upstream}/{alert.route}")
            if error is not None:
                return BreakerOpened(alert.upstream, alert.route, alert.reason, alert.open_for, error)
        return alert

    def due(self) -> list[Alert]:
        """Summaries of damped keys whose interval is over."""
        now = self._clock.now()
        alerts: list[Alert] = []
        for flaps in self._breakers.due(now):
            alerts.append(self._summary("breaker", BreakerId.parse(flaps.key).name, flaps,
                                        self._states.get(flaps.key, "closed")))
        for flaps in self._backends.due(now):
            alerts.append(self._summary("backend", flaps.key, flaps, "down" if flaps.down else "up"))
        for flaps in self._rates.due(now):
            alerts.append(self._summary("error_rate", flaps.key, flaps, "above" if flaps.down else "below"))
        for tally in self._dead_letters.due(now):
            alerts.append(WebhookDeadLetters(tally.key, tally.count, tally.window))
        for flaps in self._backlogs.due(now):
            alerts.append(self._summary("webhook_backlog", flaps.key, flaps, "above" if flaps.down else "below"))
        return alerts

    def next_due(self) -> float | None:
        """When :meth:`due` may next have something (None: nothing is held)."""
        gates = (self._breakers, self._backends, self._rates, self._dead_letters, self._backlogs)
        times = [t for t in (g.next_due() for g in gates) if t is not None]
        return min(times, default=None)

    def _summary(self, subject: str, name: str, flaps: Flaps, now: str) -> Flapping:
        return Flapping(subject, name, flaps.downs, flaps.window, now)

    def _attempt_ended(self, event: AttemptEnded) -> list[Alert]:
        if event.error is not None or event.status >= 500:
            description = describe_failure(event.status, event.error)
            if description is not None:
                self._last_errors[f"{event.upstream}/{event.route}"] = description
        return []

    def _request_ended(self, event: RequestEnded) -> list[Alert]:
        if event.upstream is None:
            return []
        if event.route is not None and (event.error is not None or event.status >= 500):
            description = describe_failure(event.status, event.error, event.message)
            if description is not None:
                self._last_errors[f"{event.upstream}/{event.route}"] = description
        if not self._settings.error_rate:
            return []
        failed = upstream_failed(event.status, event.error)
        return [] if failed is None else self._count(event.upstream, failed)

    def _count(self, upstream: str, failed: bool) -> list[Alert]:
        window = self._windows.get(upstream)
        if window is None:
            window = self._windows[upstream] = FailureWindow(self._settings.error_window)
        now = self._clock.now()
        rate = window.add(failed, now)
        if rate.requests < self._settings.error_min_requests:
            return []  # too little to judge: the last verdict stands
        high = rate.share >= self._settings.error_rate
        if high == (upstream in self._high):
            return []
        if high:
            self._high.add(upstream)
            told = self._rates.down(upstream, now)
        else:
            self._high.discard(upstream)
            told = self._rates.up(upstream, now)
        if not told:
            return []
        return [ErrorRate(upstream, high, rate.failures, rate.requests, self._settings.error_window,
                          self._settings.error_rate)]

    def _transition(self, event: BreakerTransition) -> list[Alert]:
        key, now = event.key, self._clock.now()
        upstream, route = astuple(BreakerId.parse(key))
        self._states[key] = event.to_state
        if event.forced_by:
            self._opened_at.pop(key, None)
            self._breakers.unmute(key)
            action = OVERRIDES.get(event.to_state, event.to_state)
            return [BreakerOverridden(upstream, route, action, event.forced_by, event.from_state)]
        if event.to_state == "open" and event.from_state == "closed":
            self._opened_at[key] = event.at
            if self._breakers.down(key, now):
                return [BreakerOpened(upstream, route, event.reason, max(0.0, event.open_until - event.at))]
            return []
        if event.to_state == "closed" and event.from_state in OPEN_STATES:
            opened_at = self._opened_at.pop(key, None)
            if self._breakers.up(key, now):
                down_for = None if opened_at is None else max(0.0, event.at - opened_at)
                return [BreakerRecovered(upstream, route, event.reason, down_for)]
        return []

    def _reloaded(self, event: ConfigReloaded) -> list[Alert]:
        if event.result == "ok":
            self._refused = None
            return []
        problems = event.problems or (event.message,)
        if problems == self._refused:
            return []
        self._refused = problems
        return [ConfigRefused(problems, event.trigger)]

    def _backend(self, event: BackendChanged) -> list[Alert]:
        now = self._clock.now()
        if not event.up:
            self._down_since.setdefault(event.backend, event.at)
            return [BackendDown(event.backend)] if self._backends.down(event.backend, now) else []
        since = self._down_since.pop(event.backend, None)
        if not self._backends.up(event.backend, now):
            return []
        return [BackendUp(event.backend, None if since is None else max(0.0, event.at - since))]

    def _settled(self, event: WebhookSettled) -> list[Alert]:
        if event.outcome != "dead_letter" or not self._dead_letters.add(event.webhook, self._clock.now()):
            return []
        return [WebhookDeadLetters(event.webhook, 1)]

    def _backlog(self, event: WebhookQueueSampled) -> list[Alert]:
        threshold = self._settings.webhook_backlog_age
        if not threshold:
            return []
        age = event.oldest_pending_age or 0.0
        high = event.oldest_pending_age is not None and age >= threshold
        if high == (event.webhook in self._backlogged):
            return []
        now = self._clock.now()
        if high:
            self._backlogged.add(event.webhook)
            told = self._backlogs.down(event.webhook, now)
        else:
            self._backlogged.discard(event.webhook)
            told = self._backlogs.up(event.webhook, now)
        return [WebhookBacklog(event.webhook, high, age, event.depth, threshold)] if told else []
