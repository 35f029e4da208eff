"""Time, passed in rather than read, so that policy code can be tested without sleeping.

Breaker deadlines are wall-clock seconds since the epoch because replicas share them through
Redis; NTP keeps pods' clocks within milliseconds of each other, far below any open time.
Deadlines within one process (a request's retry deadline) use ``monotonic``, which no clock
step moves; waits go through ``sleep``, so a fake clock can skip them.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go back: for durations and deadlines."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a fake clock only moves)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        # Imported here, not at the top: the pure modules that take a Clock only read the time, and
        # importing them must not load the event loop (tests/test_layering.py). Whoever awaits this
        # runs in a loop, so asyncio is already loaded and the import is a lookup.
        import asyncio

        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to (``advance``, or a ``sleep``, which returns at once)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self.slept: list[float] = []
        """Every ``sleep`` asked for, in order."""

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += seconds

    def advance(self, seconds: float) -> None:
        self._now += seconds
