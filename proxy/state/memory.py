"""The embedded store: breakers in this process only, applying the pure rules directly."""

from __future__ import annotations

import random as _random

from proxy.clock import Clock, SystemClock
from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition
from proxy.policy import breaker
from proxy.policy.breaker import Action, Admission, BreakerRecord, Random, State
from proxy.state.base import BreakerView, TransitionEmit, ignore


class MemoryBreakerStore:
    def __init__(self, clock: Clock | None = None, random: Random = _random.random) -> None:
        self._clock = clock or SystemClock()
        self._random = random
        self._records: dict[str, BreakerRecord] = {}
        self._views: dict[str, BreakerView] = {}
        self._emit: TransitionEmit = ignore

    @property
    def backend_up(self) -> bool:
        return True

    def view(self, key: str) -> BreakerView:
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = BreakerView(key)
        return view

    async def admit(self, key: str, policy: BreakerPolicy) -> Admission:
        record = self._record(key)
        admission = breaker.admit(key, record, policy, self._clock.now(), self._random)
        self._changed(key, record, admission.transition)
        return admission

    def record(self, key: str, policy: BreakerPolicy, failed: bool, probe: bool) -> None:
        record = self._records.get(key)
        if record is None:
            record = self._record(key)
        transition = breaker.record_outcome(key, record, policy, failed, probe, self._clock.now(), self._random)
        self._changed(key, record, transition)

    async def force(self, key: str, policy: BreakerPolicy, action: Action, actor: str) -> BreakerTransition:
        record = self._record(key)
        transition = breaker.force(key, record, action, actor, self._clock.now())
        self._changed(key, record, transition)
        return transition

    async def views(self, keys: list[str]) -> list[BreakerView]:
        return [self.view(key) for key in keys]

    async def flush(self) -> None:
        pass

    def emit_to(self, emit: TransitionEmit) -> None:
        self._emit = emit

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def restore(self, key: str, record: BreakerRecord) -> None:
        """Continue ``key`` from a known state (the Redis store hands over its last views when Redis fails)."""
        self._records[key] = record
        self._views[key] = view_of(key, record)

    def _record(self, key: str) -> BreakerRecord:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = BreakerRecord()
        return record

    def _changed(self, key: str, record: BreakerRecord, transition: BreakerTransition | None) -> None:
        view = self._views.get(key)
        if (view is None or view.version != record.version or view.failures != record.failures
                or view.open_until != record.open_until or view.probes_in_flight != in_flight(record)):
            self._views[key] = view_of(key, record)
        if transition is not None:
            self._emit(transition)


def view_of(key: str, record: BreakerRecord) -> BreakerView:
    return BreakerView(key=key, state=record.state, open_until=record.open_until, reason=record.reason,
                       forced_by=record.forced_by, failures=record.failures, changed_at=record.changed_at,
                       version=record.version, probes_in_flight=in_flight(record))


def in_flight(record: BreakerRecord) -> int:
    """Probes admitted and not yet answered (a half-open breaker closes or reopens on their answers)."""
    return max(record.probes - record.successes, 0) if record.state == State.HALF_OPEN else 0
