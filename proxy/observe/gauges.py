"""Metrics sampled from what the process knows, rather than counted from events.

A breaker's state changes when another replica moves it (the Redis store only updates its view;
the event is emitted once, by the replica that made the change), the stores count their Redis
errors themselves, and in-flight requests are a number the data plane already keeps. So a
:class:`Sampler` per sidecar copies these into gauges: every 0.5 s from the server's watch loop,
and once more just before each scrape, so that the answering process is exact and the hot path
pays nothing.

Multiprocess modes (``--workers N``), chosen per family:

- ``breaker_state``: ``livemax``. With Redis every worker sees the same breaker, so any mode
  agrees; with the memory backend each worker has its own breakers and the highest code shows
  the route open as soon as one worker fails fast (``disabled``, the highest code, is only ever
  set by an operator). ``live`` drops a dead worker's last word, which ``mostrecent`` would not
  order meaningfully anyway: every worker writes every 0.5 s.
- ``state_backend_up``: ``livemin``: down as soon as one live worker runs without Redis.
- ``in_flight_requests``: ``livesum``: the whole process group's requests.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Protocol, cast

from prometheus_client import Counter, Gauge, disable_created_metrics

from proxy.config.model import BreakerId, Config
from proxy.observe.metrics import PREFIX
from proxy.policy.breaker import State
from proxy.state.base import BreakerStore, LimitStore

STATE_CODES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2, State.FORCED_OPEN: 3, State.DISABLED: 4}
"""The value of ``resilience_proxy_breaker_state`` for each state (README, "Metrics")."""


class _CountsBackendFailures(Protocol):
    """The Redis stores count their failed calls (the memory stores have nothing to count)."""

    @property
    def backend_failures(self) -> int: ...


class _StateFamilies:
    def __init__(self) -> None:
        self.breaker_state = Gauge(
            PREFIX + "breaker_state",
            "This process's view of each configured breaker: 0 closed, 1 half_open, 2 open, 3 forced_open, "
            "4 disabled.",
            ["upstream", "route"], multiprocess_mode="livemax")
        self.backend_up = Gauge(
            PREFIX + "state_backend_up",
            "1 while the shared state backend (Redis) answers, 0 while local state stands in for it.",
            multiprocess_mode="livemin")
        self.backend_errors = Counter(
            PREFIX + "state_backend_errors",
            "Failed calls to the shared state backend (Redis), background reconnection checks included, "
            "by store (breakers, rate_limits).",
            ["store"])
        self.in_flight = Gauge(
            PREFIX + "in_flight_requests",
            "Requests received and not yet answered.",
            multiprocess_mode="livesum")


@lru_cache(maxsize=1)
def state_families() -> _StateFamilies:
    """Registered once per process, like :func:`proxy.observe.metrics.proxy_metrics` (no ``_created`` either)."""
    disable_created_metrics()
    return _StateFamilies()


class Sampler:
    """Copies one sidecar's breaker views, backend health, Redis error counts and in-flight count into gauges."""

    def __init__(self, config: Config, breakers: BreakerStore, limits: LimitStore,
                 in_flight: Callable[[], int]) -> None:
        families = state_families()
        self._families = families
        self._breakers = breakers
        self._limits = limits
        self._in_flight = in_flight
        pairs = config.breakers()
        self._labels = [(upstream.name, route.name) for upstream, route in pairs]
        self._views: list[tuple[str, Gauge]] = [
            (BreakerId.of(upstream, route).key, families.breaker_state.labels(upstream.name, route.name))
            for upstream, route in pairs
        ]
        self._failures: list[tuple[_CountsBackendFailures, Counter]] = [
            (cast(_CountsBackendFailures, store), families.backend_errors.labels(name))
            for name, store in (("breakers", breakers), ("rate_limits", limits))
            if hasattr(store, "backend_failures")
        ]
        self._failures_seen: dict[int, int] = {id(store): 0 for store, _ in self._failures}

    def forget_missing(self, replaced: Sampler) -> None:
        """After a reload: stop exporting the state of breakers the new config no longer has.
        (With ``--workers N`` the value stays in the worker's multiprocess file until it exits.)"""
        for labels in set(replaced._labels) - set(self._labels):
            try:
                self._families.breaker_state.remove(*labels)
            except KeyError:
                pass

    def sample(self) -> None:
        """Set every gauge from the current state; cheap (no I/O), so it also runs on each scrape."""
        for key, child in self._views:
            child.set(STATE_CODES[self._breakers.view(key).state])
        self._families.backend_up.set(1 if self._breakers.backend_up and self._limits.backend_up else 0)
        for store, child in self._failures:
            # The stores count failures themselves; the counter follows, so it never goes backwards.
            count = store.backend_failures
            seen = self._failures_seen[id(store)]
            if count > seen:
                child.inc(count - seen)
                self._failures_seen[id(store)] = count
        self._families.in_flight.set(self._in_flight())
