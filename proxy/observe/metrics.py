"""Prometheus metrics of the data plane, and their exposition for one or many workers.

With ``--workers N`` every worker writes its samples to files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode) and any worker's
``/metrics`` aggregates all of them, so a scrape sees the totals of the whole process group.
"""

from __future__ import annotations

import os
from functools import lru_cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from proxy.events import LimitDecision, RequestEnded, UpstreamThrottled

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ProxyMetrics:
    """The request counter and latency histogram, with label children cached for the hot path."""

    def __init__(self) -> None:
        self.requests = Counter(
            "resilience_proxy_requests",
            "Requests answered, by upstream, method and status class of the answer the client got.",
            ["upstream", "method", "status_class"],
        )
        self.duration = Histogram(
            "resilience_proxy_request_duration_seconds",
            "Time from receiving a request to the end of its response, by upstream.",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
        )
        self.rejected = Counter(
            "resilience_proxy_rejected_requests",
            "Requests refused before any upstream was chosen (no route, not a proxy target).",
            ["reason"],
        )
        self.backend_up = Gauge(
            "resilience_proxy_state_backend_up",
            "1 while the shared state backend (Redis) answers, 0 while local state stands in for it.",
            multiprocess_mode="livemin",
        )
        self.limit_decisions = Counter(
            "resilience_proxy_rate_limit_decisions",
            "Rate-limit decisions by upstream, route, limit and outcome (allowed, rejected, shadow_rejected, "
            "allowed_backend_down, rejected_backend_down).",
            ["upstream", "route", "limit", "outcome"],
        )
        self.throttled = Counter(
            "resilience_proxy_upstream_throttled",
            "Answers in which the upstream throttled us (429, or Google's 403 rateLimitExceeded), by reason.",
            ["upstream", "route", "reason"],
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._limit_children: dict[LimitDecision, Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    def observe(self, upstream: str, method: str, status: int, seconds: float) -> None:
        key = (upstream, method, status // 100)
        child = self._request_children.get(key)
        if child is None:
            label = method if method in _METHODS else "OTHER"
            child = self._request_children[key] = self.requests.labels(upstream, label, f"{status // 100}xx")
        child.inc()
        histogram = self._duration_children.get(upstream)
        if histogram is None:
            histogram = self._duration_children[upstream] = self.duration.labels(upstream)
        histogram.observe(seconds)

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def on_event(self, event: object) -> None:
        """The event bus's listener: every family is fed from events, none from the request code."""
        if isinstance(event, RequestEnded):
            if event.upstream is None:
                self.reject(event.error or "unknown")
            else:
                self.observe(event.upstream, event.method, event.status, event.seconds)
        elif isinstance(event, (LimitDecision, UpstreamThrottled)):
            self.on_limit_event(event)

    def on_limit_event(self, event: LimitDecision | UpstreamThrottled) -> None:
        """The rate limiter's listener."""
        if isinstance(event, UpstreamThrottled):
            self.throttled.labels(event.upstream, event.route, event.reason).inc()
            return
        child = self._limit_children.get(event)
        if child is None:
            child = self._limit_children[event] = self.limit_decisions.labels(
                event.upstream, event.route, event.limit, event.outcome)
        child.inc()


@lru_cache(maxsize=1)
def proxy_metrics() -> ProxyMetrics:
    """The process's metrics: prometheus-client registers each family once per process."""
    return ProxyMetrics()


def exposition() -> tuple[bytes, str]:
    """The text exposition for ``/metrics``: every worker's samples in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
