"""The circuit-breaker state machine: plain data and pure functions, time and chance passed in.

    closed ──(N consecutive failures, or failure rate over the window)──> open
    open ──(open time elapsed; the next request is a probe)──> half_open
    half_open ──(half_open_probes successes)──> closed
    half_open ──(any probe failure)──> open, for longer each time up to open_for_max
    any ──(operator)──> forced_open | disabled | closed (reset)

The memory store applies these functions directly; the Redis store runs the same rules in
Lua (``proxy/state/redis/lua/``) and one behavioural suite holds both to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition

Random = Callable[[], float]


class State(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class Action(str, Enum):
    FORCE_OPEN = "force-open"
    DISABLE = "disable"
    RESET = "reset"


@dataclass
class BreakerRecord:
    """The whole state of one breaker (what Redis keeps in one hash)."""

    state: State = State.CLOSED
    failures: int = 0
    """Consecutive failures while closed."""
    buckets: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Second -> (calls, failures), the failure-rate window."""
    open_until: float = 0.0
    """Open: when the first probe may go. Half-open: when unanswered probe slots are given back."""
    reopens: int = 0
    probes: int = 0
    successes: int = 0
    reason: str = ""
    forced_by: str = ""
    changed_at: float = 0.0
    version: int = 0


@dataclass(frozen=True)
class Admission:
    allowed: bool
    probe: bool = False
    retry_after: float = 0.0
    """Seconds until a request may pass again (rejections only)."""
    transition: BreakerTransition | None = None


def open_duration(policy: BreakerPolicy, reopens: int, random: Random) -> float:
    base = min(policy.open_for * policy.open_multiplier ** reopens, max(policy.open_for_max, policy.open_for))
    return base * (1 + policy.jitter * (2 * random() - 1))


def admit(key: str, record: BreakerRecord, policy: BreakerPolicy, now: float, random: Random) -> Admission:
    """May a request pass now? Open breakers let a probe through once their time is up."""
    state = record.state
    if state in (State.CLOSED, State.DISABLED):
        return Admission(True)
    if state == State.FORCED_OPEN:
        return Admission(False, retry_after=policy.open_for)
    if state == State.OPEN:
        if now < record.open_until:
            return Admission(False, retry_after=record.open_until - now)
        transition = _move(key, record, State.HALF_OPEN, "open time elapsed", now)
        record.probes, record.successes = 1, 0
        record.open_until = now + policy.open_for  # a probe that never reports gives its slot back then
        return Admission(True, probe=True, transition=transition)
    if record.probes < policy.half_open_probes:
        record.probes += 1
        return Admission(True, probe=True)
    if now >= record.open_until:  # the admitted probes never reported (a replica died): try again
        record.probes, record.successes = 1, 0
        record.open_until = now + policy.open_for
        return Admission(True, probe=True)
    return Admission(False, retry_after=max(record.open_until - now, 1.0))


def record_outcome(
    key: str, record: BreakerRecord, policy: BreakerPolicy, failed: bool, probe: bool, now: float, random: Random
) -> BreakerTransition | None:
    """Count one finished call. Calls that started under an earlier state are not counted."""
    if record.state == State.CLOSED and not probe:
        if policy.failure_rate:
            _count(record, policy, int(now), failed)
        elif not failed:  # only a failure can trip a breaker without a failure-rate window
            record.failures = 0
            return None
        record.failures = record.failures + 1 if failed else 0
        reason = _trip_reason(record, policy)
        if reason:
            return _open(key, record, policy, reason, 0, now, random)
        return None
    if record.state == State.HALF_OPEN and probe:
        if failed:
            return _open(key, record, policy, "probe failed", record.reopens + 1, now, random)
        record.successes += 1
        if record.successes >= policy.half_open_probes:
            transition = _move(key, record, State.CLOSED, f"{record.successes} probe(s) succeeded", now)
            _clear(record)
            return transition
    return None


def force(key: str, record: BreakerRecord, action: Action, actor: str, now: float) -> BreakerTransition:
    """An operator's override; ``reset`` returns to closed with every count cleared."""
    target = {Action.FORCE_OPEN: State.FORCED_OPEN, Action.DISABLE: State.DISABLED, Action.RESET: State.CLOSED}[action]
    transition = _move(key, record, target, f"{action.value} by {actor}", now, forced_by=actor)
    _clear(record)
    record.forced_by = actor if target != State.CLOSED else ""
    return transition


def _count(record: BreakerRecord, policy: BreakerPolicy, second: int, failed: bool) -> None:
    """Add a call to its one-second bucket; expired buckets go when a new second starts."""
    bucket = record.buckets.get(second)
    if bucket is None:
        for old in [s for s in record.buckets if s <= second - policy.window]:
            del record.buckets[old]
        record.buckets[second] = (1, int(failed))
    else:
        record.buckets[second] = (bucket[0] + 1, bucket[1] + failed)


def _trip_reason(record: BreakerRecord, policy: BreakerPolicy) -> str:
    if policy.consecutive_failures and record.failures >= policy.consecutive_failures:
        return f"{record.failures} consecutive failures"
    if policy.failure_rate:
        calls = sum(c for c, _ in record.buckets.values())
        failures = sum(f for _, f in record.buckets.values())
        if calls >= policy.min_calls and failures >= math.ceil(policy.failure_rate * calls - 1e-9):
            return f"failure rate {failures / calls:.0%} over {policy.window}s ({failures}/{calls} calls)"
    return ""


def _open(key: str, record: BreakerRecord, policy: BreakerPolicy, reason: str, reopens: int, now: float,
          random: Random) -> BreakerTransition:
    duration = open_duration(policy, reopens, random)
    _clear(record)
    record.reopens = reopens
    record.open_until = now + duration
    return _move(key, record, State.OPEN, reason, now)


def _clear(record: BreakerRecord) -> None:
    record.failures = record.probes = record.successes = record.reopens = 0
    record.buckets.clear()
    record.open_until = 0.0
    record.forced_by = ""


def _move(key: str, record: BreakerRecord, to: State, reason: str, now: float, forced_by: str = "") -> BreakerTransition:
    transition = BreakerTransition(key=key, from_state=record.state.value, to_state=to.value, reason=reason, at=now,
                                   open_until=record.open_until if to == State.OPEN else 0.0, forced_by=forced_by)
    record.state, record.reason, record.changed_at = to, reason, now
    record.version += 1
    return transition
