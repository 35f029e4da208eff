"""Prometheus families fed from the event bus: one listener, :meth:`ProxyMetrics.on_event`.

Policy and data-plane code only emit events (:mod:`proxy.events`); this module turns them into
counters and histograms. Labels are bounded: ``upstream`` and ``route`` come from the config,
methods outside a fixed set count as ``OTHER``, reasons and outcomes come from fixed sets in the
policy code. Nothing per org, path or key is ever a label.

The listener runs inline on the request path, so label children are made once and kept in
nested dicts keyed by values the event already holds: a request costs a few dict lookups and the
increments, no tuple or string built per request. What is sampled rather than counted (breaker
state, backend health, in-flight requests) lives in :mod:`proxy.observe.gauges`; the scrape, for
one or many workers, in :mod:`proxy.observe.exposition`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Histogram, disable_created_metrics

from proxy.config.model import BreakerId
from proxy.events import (
    AlertSent,
    AttemptEnded,
    BreakerTransition,
    CircuitRejected,
    ConfigReloaded,
    LimitDecision,
    RequestEnded,
    RetryDecided,
    UpstreamThrottled,
)
from proxy.observe.webhook_metrics import WebhookMetrics

PREFIX = "resilience_proxy_"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NO_ROUTE = ""
"""The route label of a request refused before a route was chosen (e.g. a body over the limit)."""
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_CLASSES = {n: f"{n}xx" for n in range(1, 10)}


def reason_label(reason: str) -> str:
    """``retry budget exhausted`` -> ``retry_budget_exhausted``: label values without spaces."""
    return reason.replace(" ", "_").replace("-", "_")


class _Families:
    """Every event-fed family, registered once per process."""

    def __init__(self) -> None:
        route = ["upstream", "route"]
        self.requests = Counter(
            PREFIX + "requests",
            "Requests answered, by upstream, route, method (OTHER outside the usual set) and the status class "
            "of the answer the client got (the sidecar's own answers included).",
            [*route, "method", "status_class"])
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Time from receiving a request to the end of its response, every attempt and wait included.",
            route, buckets=_LATENCY_BUCKETS)
        self.rejected = Counter(
            PREFIX + "rejected_requests",
            "Requests refused before any upstream was chosen (no route, not a proxy target), by error type.",
            ["reason"])
        self.attempts = Counter(
            PREFIX + "upstream_attempts",
            "Attempts at the upstream, by result: the status class of its answer, or the Proxy-Status error "
            "type when it gave none (connection_refused, http_response_timeout, ...).",
            [*route, "result"])
        self.attempt_duration = Histogram(
            PREFIX + "upstream_attempt_duration_seconds",
            "Time from sending one attempt to the upstream's response head (or the attempt's failure).",
            route, buckets=_LATENCY_BUCKETS)
        self.retries = Counter(
            PREFIX + "retries",
            "Retries made, by what was retried (a status such as 503, timeout, connect_error, reset).",
            [*route, "reason"])
        self.retries_refused = Counter(
            PREFIX + "retries_refused",
            "Retryable failures not retried, by why: retry_budget_exhausted, breaker_open, deadline, "
            "attempts_exhausted, not_idempotent, retry_after_too_long.",
            [*route, "reason"])
        self.transitions = Counter(
            PREFIX + "breaker_transitions",
            "Breaker state changes, counted by the process that made each one (so fleet sums are exact).",
            [*route, "from", "to"])
        self.breaker_rejections = Counter(
            PREFIX + "breaker_rejections",
            "Requests failed fast (503) because the route's breaker was open.",
            route)
        self.limit_decisions = Counter(
            PREFIX + "rate_limit_decisions",
            "Rate-limit decisions by upstream, route, limit and outcome (allowed, rejected, shadow_rejected, "
            "allowed_backend_down, rejected_backend_down).",
            [*route, "limit", "outcome"])
        self.throttled = Counter(
            PREFIX + "upstream_throttled",
            "Answers in which the upstream throttled us (429, or Google's 403 rateLimitExceeded), by reason.",
            [*route, "reason"])
        self.reloads = Counter(
            PREFIX + "config_reloads",
            "Config reloads by result: ok (applied) or error (refused whole; the old config stays).",
            ["result"])
        self.alerts = Counter(
            PREFIX + "alerts",
            "Alerts by channel and result: sent, dropped (queue full or rate-limited), failed.",
            ["channel", "result"])


class _Route:
    """The label children of one (upstream, route), made on first use."""

    __slots__ = ("attempt_duration", "attempts", "duration", "families", "labels", "limits", "refused", "rejections",
                 "requests", "retries", "throttled")

    def __init__(self, families: _Families, upstream: str, route: str) -> None:
        self.families = families
        self.labels = (upstream, route)
        self.requests: dict[str, dict[int, Counter]] = {}
        """method label -> status // 100 -> child."""
        self.duration = families.duration.labels(upstream, route)
        self.attempts: dict[str | int, Counter] = {}
        """error type, or status // 100 -> child."""
        self.attempt_duration = families.attempt_duration.labels(upstream, route)
        self.retries: dict[str, Counter] = {}
        self.refused: dict[str, Counter] = {}
        self.rejections: Counter | None = None
        """Made on the first fast failure: routes without a breaker get no series."""
        self.limits: dict[str, dict[str, Counter]] = {}
        self.throttled: dict[str, Counter] = {}

    def request(self, method: str, status: int, seconds: float) -> None:
        label = method if method in METHODS else "OTHER"
        by_class = self.requests.get(label)
        if by_class is None:
            by_class = self.requests[label] = {}
        child = by_class.get(status // 100)
        if child is None:
            child = by_class[status // 100] = self.families.requests.labels(
                *self.labels, label, _CLASSES.get(status // 100, "other"))
        child.inc()
        self.duration.observe(seconds)

    def attempt(self, status: int, error: str | None, seconds: float) -> None:
        key: str | int = error if error is not None else status // 100
        child = self.attempts.get(key)
        if child is None:
            result = error if error is not None else _CLASSES.get(status // 100, "other")
            child = self.attempts[key] = self.families.attempts.labels(*self.labels, result)
        child.inc()
        self.attempt_duration.observe(seconds)

    def retry(self, retried: bool, reason: str) -> None:
        children = self.retries if retried else self.refused
        child = children.get(reason)
        if child is None:
            family = self.families.retries if retried else self.families.retries_refused
            child = children[reason] = family.labels(*self.labels, reason_label(reason))
        child.inc()

    def reject(self) -> None:
        if self.rejections is None:
            self.rejections = self.families.breaker_rejections.labels(*self.labels)
        self.rejections.inc()

    def limit(self, limit: str, outcome: str) -> None:
        by_outcome = self.limits.get(limit)
        if by_outcome is None:
            by_outcome = self.limits[limit] = {}
        child = by_outcome.get(outcome)
        if child is None:
            child = by_outcome[outcome] = self.families.limit_decisions.labels(*self.labels, limit, outcome)
        child.inc()

    def throttle(self, reason: str) -> None:
        child = self.throttled.get(reason)
        if child is None:
            child = self.throttled[reason] = self.families.throttled.labels(*self.labels, reason)
        child.inc()


class ProxyMetrics:
    """The bus listener that keeps every event-fed family; one per process (see :func:`proxy_metrics`)."""

    def __init__(self) -> None:
        self.families = _Families()
        self._routes: dict[str, dict[str, _Route]] = {}
        self._rejected: dict[str, Counter] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            RequestEnded: self._request_ended,
            AttemptEnded: self._attempt_ended,
            RetryDecided: self._retry_decided,
            CircuitRejected: self._circuit_rejected,
            BreakerTransition: self._transition,
            LimitDecision: self._limit_decision,
            UpstreamThrottled: self._throttled,
            ConfigReloaded: self._reloaded,
            AlertSent: self._alert_sent,
        }
        self.webhooks = WebhookMetrics()
        self._handlers.update(self.webhooks.handlers())

    @property
    def events(self) -> frozenset[type]:
        """The event types :meth:`on_event` counts (the bus hands it no other)."""
        return frozenset(self._handlers)

    def on_event(self, event: object) -> None:
        """The event bus's listener: one dict lookup on the event's type, then the family's update."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def route(self, upstream: str, route: str | None) -> _Route:
        """The cached children of ``upstream``/``route``."""
        routes = self._routes.get(upstream)
        if routes is None:
            routes = self._routes[upstream] = {}
        name = NO_ROUTE if route is None else route
        children = routes.get(name)
        if children is None:
            children = routes[name] = _Route(self.families, upstream, name)
        return children

    def _request_ended(self, event: RequestEnded) -> None:
        if event.upstream is None:
            reason = event.error or "unknown"
            child = self._rejected.get(reason)
            if child is None:
                child = self._rejected[reason] = self.families.rejected.labels(reason)
            child.inc()
            return
        self.route(event.upstream, event.route).request(event.method, event.status, event.seconds)

    def _attempt_ended(self, event: AttemptEnded) -> None:
        self.route(event.upstream, event.route).attempt(event.status, event.error, event.seconds)

    def _retry_decided(self, event: RetryDecided) -> None:
        self.route(event.upstream, event.route).retry(event.retried, event.reason)

    def _circuit_rejected(self, event: CircuitRejected) -> None:
        self.route(event.upstream, event.route).reject()

    def _limit_decision(self, event: LimitDecision) -> None:
        self.route(event.upstream, event.route).limit(event.limit, event.outcome)

    def _throttled(self, event: UpstreamThrottled) -> None:
        self.route(event.upstream, event.route).throttle(event.reason)

    def _transition(self, event: BreakerTransition) -> None:
        breaker = BreakerId.parse(event.key)
        self.families.transitions.labels(breaker.upstream, breaker.route, event.from_state, event.to_state).inc()

    def _reloaded(self, event: ConfigReloaded) -> None:
        self.families.reloads.labels(event.result).inc()

    def _alert_sent(self, event: AlertSent) -> None:
        self.families.alerts.labels(event.channel, event.result).inc()


@lru_cache(maxsize=1)
def proxy_metrics() -> ProxyMetrics:
    """The process's metrics: prometheus-client registers each family once per process.

    ``*_created`` series are turned off first: in the classic text format each would be one more
    series per labelled child that Prometheus stores and nobody queries (multiprocess mode never
    writes them anyway, so one or many workers expose the same series).
    """
    disable_created_metrics()
    return ProxyMetrics()
