"""The last minute of this process's traffic, per route: what the status page and ``status`` show.

Fed from the event bus (:mod:`proxy.events`) on the request path, so each event costs O(1): a dict
lookup or two and a few integer increments into the current second's slot, a ``bisect`` for the
latency bucket, and no allocation. Time is never read per event: :meth:`RecentTraffic.advance`,
called a few times a second off the request path (and before each read), closes the current
second and drops seconds older than the window. Prometheus keeps the exact all-time counters; this
keeps only enough to say "now".

Latency quantiles come from a log-spaced histogram (25% wide buckets from 0.5 ms to about 100 s),
interpolated within the bucket as Prometheus's ``histogram_quantile`` does, so p50/p99 are within a
bucket's width of the truth.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field

from proxy.events import LimitDecision, RequestEnded, RetryDecided
from proxy.policy.classify import upstream_failed

WINDOW = 60
"""Seconds of traffic kept."""
LATENCY_BOUNDS: tuple[float, ...] = tuple(0.0005 * 1.25 ** i for i in range(56))
"""Upper bounds of the latency buckets, in seconds (the last bucket, past them, has no bound)."""
LIMIT_OUTCOMES = {"allowed": 0, "allowed_backend_down": 0, "rejected": 1, "rejected_backend_down": 1,
                  "shadow_rejected": 2}
"""A LimitDecision's outcome -> its column: allowed, limited, shadow-limited."""
_REQUESTS, _JUDGED, _FAILED, _RETRIES = range(4)


class _Slot:
    """One second of one route (or the running sum of the completed seconds in the window)."""

    __slots__ = ("counts", "latency", "limits", "second")

    def __init__(self, second: int = 0) -> None:
        self.second = second
        self.counts = [0, 0, 0, 0]
        """requests, requests that say something about the upstream, failures among them, retries."""
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.limits: dict[str, list[int]] = {}
        """limit name -> [allowed, limited, shadow-limited]."""

    def empty(self) -> bool:
        return not (self.counts[_REQUESTS] or self.counts[_RETRIES] or self.limits)

    def add(self, other: _Slot, sign: int = 1) -> None:
        counts, latency = self.counts, self.latency
        for i, value in enumerate(other.counts):
            counts[i] += sign * value
        if other.counts[_REQUESTS]:
            for i, value in enumerate(other.latency):
                if value:
                    latency[i] += sign * value
        for name, values in other.limits.items():
            mine = self.limits.setdefault(name, [0, 0, 0])
            for i, value in enumerate(values):
                mine[i] += sign * value


class _Route:
    __slots__ = ("current", "past", "total")

    def __init__(self) -> None:
        self.current = _Slot()
        """What arrived since the last :meth:`RecentTraffic.advance`."""
        self.past: deque[_Slot] = deque()
        """Completed seconds that held something, oldest first (idle seconds take no room)."""
        self.total = _Slot()
        """The sum of ``past``."""


@dataclass(frozen=True)
class LimitCounts:
    """One rate limit's decisions on one route over the window."""

    allowed: int
    limited: int
    shadow_limited: int


@dataclass(frozen=True)
class RouteTraffic:
    """One route's last minute in this process. Rates are per second over ``seconds``."""

    seconds: float
    """How much time the figures cover: the window, or less just after start."""
    requests: int = 0
    failures: int = 0
    judged: int = 0
    """Requests whose answer says something about the upstream (not the sidecar's own refusals)."""
    retries: int = 0
    p50: float | None = None
    """Seconds; None without requests."""
    p99: float | None = None
    limits: dict[str, LimitCounts] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_ratio(self) -> float | None:
        """Failed share of the requests that say something about the upstream; None when none did."""
        return self.failures / self.judged if self.judged else None

    @property
    def limited_per_second(self) -> float:
        return sum(c.limited for c in self.limits.values()) / self.seconds if self.seconds else 0.0


class RecentTraffic:
    """Per (upstream, route): requests, failures, latency, retries and limit decisions of the last minute."""

    def __init__(self, now: float, window: int = WINDOW) -> None:
        """``now``: monotonic seconds at start (the figures cover no more than the time since)."""
        self._window = window
        self._started = now
        self._second = int(now)
        self._routes: dict[str, dict[str, _Route]] = {}

    # -- the bus's handlers (the request path) ----------------------------------------------------

    def request_ended(self, event: RequestEnded) -> None:
        if event.upstream is None or event.route is None:
            return  # refused before a route was chosen: nothing to show per route
        slot = self._slot(event.upstream, event.route)
        counts = slot.counts
        counts[_REQUESTS] += 1
        failed = upstream_failed(event.status, event.error)
        if failed is not None:
            counts[_JUDGED] += 1
            counts[_FAILED] += failed
        slot.latency[bisect_left(LATENCY_BOUNDS, event.seconds)] += 1

    def retry_decided(self, event: RetryDecided) -> None:
        if event.retried:
            self._slot(event.upstream, event.route).counts[_RETRIES] += 1

    def limit_decided(self, event: LimitDecision) -> None:
        column = LIMIT_OUTCOMES.get(event.outcome)
        if column is not None:
            limits = self._slot(event.upstream, event.route).limits
            counts = limits.get(event.limit)
            if counts is None:
                counts = limits[event.limit] = [0, 0, 0]
            counts[column] += 1

    def _slot(self, upstream: str, route: str) -> _Slot:
        routes = self._routes.get(upstream)
        if routes is None:
            routes = self._routes[upstream] = {}
        found = routes.get(route)
        if found is None:
            found = routes[route] = _Route()
            found.current.second = self._second
        return found.current

    # -- off the request path ---------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Close the current second once ``now`` (monotonic) is past it; forget seconds out of the window."""
        second = int(now)
        if second <= self._second:
            return
        oldest = second - self._window
        for routes in self._routes.values():
            for route in routes.values():
                current = route.current
                if not current.empty():
                    route.total.add(current)
                    route.past.append(current)
                    route.current = _Slot(second)
                else:
                    current.second = second
                past = route.past
                while past and past[0].second <= oldest:
                    route.total.add(past.popleft(), -1)
        self._second = second

    def seconds(self, now: float) -> float:
        """How much time the figures cover at ``now`` (monotonic): the window, or less just after start."""
        return max(min(now - self._started, float(self._window)), 1.0)

    def route(self, upstream: str, route: str, now: float) -> RouteTraffic:
        """``upstream``/``route`` over the window ending at ``now`` (monotonic), after :meth:`advance`."""
        seconds = self.seconds(now)
        found = self._routes.get(upstream, {}).get(route)
        if found is None:
            return RouteTraffic(seconds)
        merged = _Slot()
        merged.add(found.total)
        merged.add(found.current)
        requests, judged, failed, retries = merged.counts
        return RouteTraffic(seconds, requests, failed, judged, retries, quantile(merged.latency, 0.5),
                            quantile(merged.latency, 0.99),
                            {name: LimitCounts(*values) for name, values in sorted(merged.limits.items())})


def quantile(buckets: list[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram over :data:`LATENCY_BOUNDS`, linear within its bucket."""
    total = sum(buckets)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            lower = LATENCY_BOUNDS[i - 1] if i else 0.0
            return lower + (LATENCY_BOUNDS[i] - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BOUNDS[-1]
