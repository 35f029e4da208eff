"""The Lua half of the Redis breaker store: the scripts, the outcome batches they take, what comes back.

The layout (the one key, ARGV, the reply) is documented at the top of ``lua/breaker.lua``,
the rules shared by ``admit.lua``, ``record.lua`` and ``force.lua``: each script is that file
followed by its own. Values come back as strings, numbers written with ``%.17g`` so that
every float survives the trip exactly.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition
from proxy.policy.breaker import Admission, Random, State
from proxy.state.base import BreakerView
from proxy.state.redis.scripts import Scripts

VIEW_FIELDS = ("state", "open_until", "reason", "forced_by", "failures", "changed_at", "version")
READ_FIELDS = (*VIEW_FIELDS, "probes", "successes")
"""What a read takes: the view, and the half-open counts that give the probes in flight (scripts and
pub/sub messages carry the view only: the hot path never needs them)."""
SCRIPTS = Scripts("admit", "record", "force", prelude="breaker")

Call = tuple[str, str, BreakerPolicy, Sequence[Any]]
"""A script to run: its name, the breaker, the policy, and its ARGV after the policy."""


async def run(client: aioredis.Redis, prefix: str, channel: str, calls: Sequence[Call], now: float,
              random: Random) -> list[Any]:
    """Run ``calls`` in one round trip (EVALSHA); load the scripts again if Redis lost them."""
    return await SCRIPTS.call_many(client, [
        (script, (hash_key(prefix, key),), (channel, key, now, random(), *policy_args(policy), *extra))
        for script, key, policy, extra in calls])


async def read(client: aioredis.Redis, prefix: str, keys: Sequence[str]) -> list[BreakerView]:
    """The stored views of ``keys``, in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(hash_key(prefix, key), READ_FIELDS)
        rows = await pipe.execute()
    return [view_from(key, row) for key, row in zip(keys, rows)]


def hash_key(prefix: str, key: str) -> str:
    """``rp:{twilio/twilio_sms}:breaker``: the hash tag keeps a breaker on one Redis Cluster slot."""
    return f"{prefix}{{{key}}}:breaker"


@functools.lru_cache(maxsize=1024)
def policy_args(policy: BreakerPolicy) -> tuple[Any, ...]:
    """ARGV 5 to 13 of every script."""
    return (policy.consecutive_failures, policy.failure_rate, policy.window, policy.min_calls, policy.open_for,
            policy.open_for_max, policy.open_multiplier, policy.jitter, policy.half_open_probes)


def view_from(key: str, values: Sequence[str | None]) -> BreakerView:
    """A view from a script's reply (:data:`VIEW_FIELDS`) or an HMGET of :data:`READ_FIELDS` (all None: a
    breaker never stored)."""
    state, open_until, reason, forced_by, failures, changed_at, version = values[:7]
    if state is None:
        return BreakerView(key)
    probes, successes = values[7:9] if len(values) >= 9 else (None, None)
    in_flight = max(int(probes or 0) - int(successes or 0), 0) if state == State.HALF_OPEN else 0
    return BreakerView(key=key, state=State(state), open_until=float(open_until or 0), reason=reason or "",
                       forced_by=forced_by or "", failures=int(failures or 0), changed_at=float(changed_at or 0),
                       version=int(version or 0), probes_in_flight=in_flight)


def view_from_message(data: str) -> BreakerView:
    """A view published by a script; raises ValueError when the message is not one."""
    try:
        fields = json.loads(data)
        return view_from(fields["key"], [fields[name] for name in VIEW_FIELDS])
    except (KeyError, TypeError) as error:
        raise ValueError(f"not a breaker view: {error}") from error


def transitions_from(key: str, rows: Sequence[Sequence[str]]) -> list[BreakerTransition]:
    return [BreakerTransition(key=key, from_state=row[0], to_state=row[1], reason=row[2], at=float(row[3]),
                              open_until=float(row[4]), forced_by=row[5]) for row in rows]


def admission_from(row: Sequence[str], transition: BreakerTransition | None) -> Admission:
    allowed, probe, retry_after = row
    return Admission(allowed == "1", probe == "1", float(retry_after), transition)


class Batches:
    """Outcomes waiting for the next flush: per breaker, in the order they came, as record.lua takes them."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    def add(self, key: str, policy: BreakerPolicy, failed: bool, probe: bool, at: float, view: BreakerView) -> bool:
        """Queue one outcome. True when it should leave at once: a probe's (a half-open breaker waits for
        it), or a failure that may open the breaker (so the fleet hears of it in milliseconds)."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        segments = pending.segments
        if not segments or (segments[-1][0] is not policy and segments[-1][0] != policy):
            segments.append((policy, []))
        segments[-1][1].extend((failed + 2 * probe, at))  # ARGV pairs (code, at) of record.lua
        if probe:
            return True
        if not failed:
            pending.failures, pending.success = 0, True
            return False
        pending.failures += 1
        run = pending.failures if pending.success else pending.failures + view.failures
        return view.state == State.CLOSED and 0 < policy.consecutive_failures <= run

    def take(self) -> list[Call]:
        """Every queued outcome as record calls (one per breaker and policy); the queue starts empty again."""
        pending, self._pending = self._pending, {}
        return [("record", key, policy, outcomes)
                for key, batch in pending.items() for policy, outcomes in batch.segments]


@dataclass
class _Pending:
    segments: list[tuple[BreakerPolicy, list[float]]] = field(default_factory=list)
    """(policy, [code, at, code, at, ...]): a new segment whenever the policy changes."""
    failures: int = 0
    """Failures since the last success in this batch."""
    success: bool = False
    """A success came in this batch, so Redis's count of consecutive failures starts again."""
