"""Time, passed in rather than read, so that policy code can be tested without sleeping.

Breaker deadlines are wall-clock seconds since the epoch because replicas share them through
Redis; NTP keeps pods' clocks within milliseconds of each other, far below any open time.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
