"""The embedded rate-limit store: GCRA buckets in this process, applying the pure rules directly."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.clock import Clock, SystemClock
from proxy.config.policy_values import micros
from proxy.policy import ratelimit
from proxy.policy.ratelimit import Check, Verdict

_SWEEP_EVERY = 10_000
"""Buckets stored before the full ones (TAT in the past: no state worth keeping) are dropped."""


class MemoryLimitStore:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._tats: dict[tuple[str, str], int] = {}
        self._next_sweep = _SWEEP_EVERY

    @property
    def backend_up(self) -> bool:
        return True

    async def acquire(self, checks: Sequence[Check]) -> list[Verdict]:
        return self.acquire_now(checks)

    def acquire_now(self, checks: Sequence[Check]) -> list[Verdict]:
        """:meth:`acquire` without a coroutine, for callers that are already deciding locally."""
        now = micros(self._clock.now())
        tats = self._tats
        verdicts, charged = ratelimit.decide(checks, [tats.get(check.key) for check in checks], now)
        for check, tat in zip(checks, charged):
            if tat is not None:
                tats[check.key] = tat
        if len(tats) >= self._next_sweep:
            self._sweep(now)
        return verdicts

    async def hold(self, checks: Sequence[Check], seconds: float) -> None:
        now = micros(self._clock.now())
        for check in checks:
            self._tats[check.key] = ratelimit.hold(self._tats.get(check.key), now, check.rate, seconds)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _sweep(self, now: int) -> None:
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        self._next_sweep = max(_SWEEP_EVERY, 2 * len(self._tats))
