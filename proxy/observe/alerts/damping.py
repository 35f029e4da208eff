"""Damping for alerts: how often a thing may say "down", and a sliding error-rate window.

Both are pure: every method takes ``now``, so tests drive them with numbers and never sleep.

:class:`FlapGate` lets the first "down" of a key through, then holds further ones for
``interval`` seconds, counting them; once the interval is over, :meth:`FlapGate.due` hands out one
summary per key that held anything ("opened 7 times in the last 10 min; now closed"). An "up"
is told only when its "down" was, so a flapping breaker costs at most a down, its up and a
summary per interval instead of two messages per flap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Flaps:
    """What a key did while its alerts were held: ``downs`` in the last ``window`` seconds."""

    key: str
    downs: int
    window: float
    down: bool
    """Its state now (as last reported)."""


@dataclass
class _Track:
    announced_at: float
    """When its last "down" (or summary) was told."""
    downs: int = 1
    """Downs since then, the told one included."""
    held: int = 0
    muted: bool = False
    """The current incident's "down" was held, so its "up" is held too."""
    down: bool = True


class FlapGate:
    """At most one "down" message per key per ``interval``; the rest are counted and summarised."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._tracks: dict[str, _Track] = {}

    def down(self, key: str, now: float) -> bool:
        """The key went down: True when this should be told now."""
        track = self._tracks.get(key)
        if track is None or (now - track.announced_at >= self.interval and not track.held):
            self._tracks[key] = _Track(announced_at=now)
            return True
        track.down = True
        track.downs += 1
        track.held += 1
        track.muted = True
        return False

    def up(self, key: str, now: float) -> bool:
        """The key came back: True unless its "down" was held (an unseen "down" counts as told)."""
        track = self._tracks.get(key)
        if track is None:
            return True
        track.down = False
        if track.muted:
            track.muted = False
            return False
        return True

    def unmute(self, key: str) -> None:
        """An operator stepped in: whatever comes next is told (their own action always is)."""
        track = self._tracks.get(key)
        if track is not None:
            track.muted = False

    def due(self, now: float) -> list[Flaps]:
        """Summaries of the keys whose interval is over with downs held; each restarts its interval."""
        summaries = []
        for key, track in list(self._tracks.items()):
            if now - track.announced_at < self.interval:
                continue
            if track.held:
                summaries.append(Flaps(key, track.downs, now - track.announced_at, track.down))
                track.announced_at, track.downs, track.held, track.muted = now, 0, 0, False
            elif not track.down:
                del self._tracks[key]  # quiet and up: nothing left to remember
        return summaries

    def next_due(self) -> float | None:
        """When :meth:`due` will next have something to say (None: nothing held)."""
        times = [t.announced_at + self.interval for t in self._tracks.values() if t.held]
        return min(times, default=None)


@dataclass(frozen=True)
class Tally:
    """Failures among requests over a window (not a rate limit's Rate: that one is a GCRA allowance)."""

    failures: int
    requests: int

    @property
    def share(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


class FailureWindow:
    """Requests and failures over the last ``window`` seconds, in one-second buckets.

    Costs O(1) per request (running totals; expired buckets leave from the front), because it is
    fed from the request path.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._buckets: deque[list[int]] = deque()
        """[second, requests, failures], oldest first."""
        self._requests = 0
        self._failures = 0

    def add(self, failed: bool, now: float) -> Tally:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            bucket = self._buckets[-1]
        else:
            bucket = [second, 0, 0]
            self._buckets.append(bucket)
        bucket[1] += 1
        bucket[2] += failed
        self._requests += 1
        self._failures += failed
        oldest = now - self.window
        while self._buckets and self._buckets[0][0] + 1 <= oldest:
            _, requests, failures = self._buckets.popleft()
            self._requests -= requests
            self._failures -= failures
        return Tally(self._failures, self._requests)


@dataclass(frozen=True)
class Held:
    """What a key counted while its alerts were held: ``count`` more in the last ``window`` seconds."""

    key: str
    count: int
    window: float


class CountGate:
    """For things that only ever happen (dead letters): the first of a key is told at once, the next
    ones within ``interval`` are counted, and one summary with the count follows the interval."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._tracks: dict[str, list[float]] = {}
        """key -> [when it was last told, how many were held since]."""

    def add(self, key: str, now: float) -> bool:
        """One more of ``key``: True when this one should be told now."""
        track = self._tracks.get(key)
        if track is None or (now - track[0] >= self.interval and not track[1]):
            self._tracks[key] = [now, 0]
            return True
        track[1] += 1
        return False

    def due(self, now: float) -> list[Held]:
        """Summaries of the keys whose interval is over with something held; each restarts its interval."""
        tallies = []
        for key, track in list(self._tracks.items()):
            if now - track[0] < self.interval:
                continue
            if track[1]:
                tallies.append(Held(key, int(track[1]), now - track[0]))
                self._tracks[key] = [now, 0]
            else:
                del self._tracks[key]
        return tallies

    def next_due(self) -> float | None:
        return min((t[0] + self.interval for t in self._tracks.values() if t[1]), default=None)
