"""The status document: what ``GET /admin/status``, the status page and ``resilience-proxy status`` show.

Two scopes, said in the document so that nobody mistakes one for the other:

- **fleet** (with ``state.backend: redis``): breaker state, read fresh from the shared state (with
  the memory backend it is this process's, and the document says ``process``); webhook queues.
- **process**: the last minute of traffic per route (:mod:`proxy.observe.traffic`), and rate-limit
  decisions, counted by this process from the event bus.

Only names from the config (upstreams, routes, limits, webhooks), states, counts, times and the
reasons the breakers and operators give appear; never a header, path, body, key value or client
address. Times are epoch seconds; ``generated_at`` lets a reader compute ages on its own clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.clock import Clock
from proxy.config.model import BreakerId, Config, Route, Upstream
from proxy.config.running import RunningConfig
from proxy.events import BreakerTransition, LimitDecision, RequestEnded, RetryDecided
from proxy.observe.traffic import RecentTraffic, RouteTraffic
from proxy.observe.transitions import Seen, TransitionLog
from proxy.policy.breaker import State
from proxy.state.base import BreakerView
from proxy.state.webhooks import EventStatus, QueueStats


class StatusFeed:
    """The event-bus listener behind the status page: traffic per route and the transition log."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.traffic = RecentTraffic(clock.monotonic())
        self.transitions = TransitionLog()
        self._told: Callable[[Seen], None] = lambda _: None
        self._handlers: dict[type, Callable[[Any], None]] = {
            RequestEnded: self.traffic.request_ended,
            RetryDecided: self.traffic.retry_decided,
            LimitDecision: self.traffic.limit_decided,
            BreakerTransition: self._transition,
        }
        self.events = frozenset(self._handlers)
        """The event types :meth:`on_event` reads: subscribe it to these only (the bus skips it for others)."""

    def on_event(self, event: object) -> None:
        """The bus's listener: one dict lookup on the event's type, then O(1) work."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def tell(self, listener: Callable[[Seen], None]) -> None:
        """Hand each transition this process makes to ``listener`` as it happens (it must not block)."""
        self._told = listener

    def _transition(self, event: BreakerTransition) -> None:
        self._told(self.transitions.record(event))


@dataclass(frozen=True)
class QueueReport:
    """One webhook's queue, or None stats when the store could not say."""

    name: str
    stats: QueueStats | None


def every_route(config: Config) -> list[tuple[Upstream, Route]]:
    """Every route of every upstream (its default route last), breaker or not, in file order."""
    return [(upstream, route) for upstream in config.upstreams
            for route in (*upstream.routes, upstream.default_route) if route is not None]


def status_document(running: RunningConfig, views: Mapping[str, BreakerView], traffic: RecentTraffic,
                    transitions: Sequence[Seen] | None, backend_up: bool, webhooks: Sequence[QueueReport] | None,
                    now: float, monotonic: float, pid: int) -> dict[str, Any]:
    """The whole document. ``views``: breaker key -> a fresh view; ``transitions`` None leaves them out
    (the live stream sends them one by one); ``webhooks`` None: no webhook store configured."""
    config = running.config
    shared = config.state.backend == "redis"
    routes = [_route(upstream, route, views.get(BreakerId.of(upstream, route).key),
                     traffic.route(upstream.name, route.name, monotonic), now)
              for upstream, route in every_route(config)]
    last = running.last_attempt
    document: dict[str, Any] = {
        "generated_at": round(now, 3),
        "pid": pid,
        "scopes": {"breakers": "fleet" if shared else "process", "traffic": "process",
                   "webhooks": "fleet" if shared else "process"},
        "window_seconds": round(traffic.seconds(monotonic), 1),
        "state_backend": {"kind": config.state.backend, "up": backend_up, "required": config.state.required},
        "config": {
            "version": running.version, "loaded_at": round(running.loaded_at, 3), "source": config.source,
            "last_reload": None if last is None else {
                "at": round(last.at, 3), "trigger": last.trigger, "result": last.result, "version": last.version,
                "problems": list(last.problems)},
        },
        "admin": {"token_configured": bool(config.admin.token)},
        "upstreams": [{"name": u.name, "prefix": u.prefix} for u in config.upstreams],
        "routes": routes,
        "webhooks": None if webhooks is None else [_queue(report) for report in webhooks],
    }
    if transitions is not None:
        document["transitions"] = [describe_transition(seen) for seen in transitions]
    return document


def describe_transition(seen: Seen) -> dict[str, Any]:
    return {"upstream": seen.upstream, "route": seen.route, "from": seen.from_state, "to": seen.to_state,
            "reason": seen.reason, "at": round(seen.at, 3),
            "open_until": round(seen.open_until, 3) if seen.open_until else None,
            "by": "this process" if seen.here else "another replica"}


def _route(upstream: Upstream, route: Route, view: BreakerView | None, traffic: RouteTraffic,
           now: float) -> dict[str, Any]:
    return {
        "upstream": upstream.name, "route": route.name,
        "breaker": None if route.breaker is None else _breaker(view or BreakerView(BreakerId.of(upstream, route).key),
                                                                BreakerId.of(upstream, route).name, now),
        "requests": traffic.requests, "rps": round(traffic.rps, 3),
        "error_ratio": None if traffic.error_ratio is None else round(traffic.error_ratio, 4),
        "p50_ms": _ms(traffic.p50), "p99_ms": _ms(traffic.p99),
        "retries": traffic.retries, "retries_per_second": round(traffic.retries / traffic.seconds, 3),
        "limited_per_second": round(traffic.limited_per_second, 3),
        "limits": [{"name": name, "allowed": c.allowed, "limited": c.limited, "shadow_limited": c.shadow_limited}
                   for name, c in traffic.limits.items()],
    }


def _breaker(view: BreakerView, name: str, now: float) -> dict[str, Any]:
    timed = view.state == State.OPEN and view.open_until
    return {
        "name": name, "state": view.state.value, "since": round(view.changed_at, 3) if view.changed_at else None,
        "reason": view.reason, "failures": view.failures, "forced_by": view.forced_by or None,
        "open_until": round(view.open_until, 3) if timed else None,
        "seconds_left": round(max(view.open_until - now, 0.0), 3) if timed else None,
        "probes_in_flight": view.probes_in_flight,
    }


def _queue(report: QueueReport) -> dict[str, Any]:
    stats = report.stats
    if stats is None:
        return {"name": report.name, "available": False}
    age = stats.oldest_pending_age
    return {"name": report.name, "available": True, "depth": stats.depth,
            "oldest_pending_seconds": None if age is None else round(age, 3),
            "counts": {status.value: int(stats.counts.get(status, 0)) for status in EventStatus}}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
