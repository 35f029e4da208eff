"""Timeouts for upstream attempts that share one event-loop timer.

``asyncio.timeout`` builds a Timeout and makes and cancels a loop timer every time it is entered
(on uvloop a libuv timer handle each time): the largest cost the sidecar added to aiohttp's client
per request after the access line (bench/README.md, issue 16). Here entering a bound only records its
deadline in a heap; one timer per :class:`Deadlines`, armed for the earliest deadline, cancels the
tasks that ran past theirs. Attempts nearly always end long before their deadline, so that timer
rarely fires, and is re-armed only when a deadline earlier than the one it waits for comes in.

What the block sees is what ``asyncio.timeout`` gives: past its deadline the task is cancelled, and
the block raises :class:`TimeoutError` from the ``CancelledError``; a cancellation from elsewhere (a
client that went away, a shutdown) propagates unchanged, even if the deadline also passed.

Ended bounds are dropped from the heap lazily: it is rebuilt from the live ones when it holds more
than twice as many entries as there are live bounds (plus a few), so it stays as small as the
attempts in flight and each bound costs a constant amount on average.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from types import TracebackType

_SPARE = 64
"""Ended entries the heap may keep beyond twice the live ones before it is rebuilt."""


class Deadlines:
    """The deadlines of every attempt in flight on one event loop, and the one timer that enforces them."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Bound]] = []
        self._order = itertools.count()  # ties: the first deadline set fires first, and bounds never compare
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0

    def close(self) -> None:
        """Stop the timer (the bounds still open are no longer enforced)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def bound(self, seconds: float) -> Bound:
        """A context manager that cancels the task running its block ``seconds`` after it was entered."""
        return Bound(self, seconds)

    def _add(self, bound: Bound, loop: asyncio.AbstractEventLoop) -> None:
        when = bound.when
        heapq.heappush(self._heap, (when, next(self._order), bound))
        self._live += 1
        if self._timer is None or when < self._armed_for:
            self._arm(loop, when)

    def _remove(self, bound: Bound) -> None:
        bound.ended = True
        self._live -= 1
        if len(self._heap) > 2 * self._live + _SPARE:
            self._heap = [entry for entry in self._heap if not entry[2].ended]
            heapq.heapify(self._heap)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel every live bound past its deadline; wait for the next deadline, if any is left."""
        self._timer = None
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            bound = heapq.heappop(heap)[2]
            if not bound.ended:
                bound.expire()
        if heap:
            self._arm(loop, heap[0][0])


class Bound:
    """One attempt's deadline: ``with deadlines.bound(seconds):`` around what it awaits."""

    __slots__ = ("_cancelling", "_deadlines", "_seconds", "_task", "ended", "expired", "when")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self._deadlines = deadlines
        self._seconds = seconds
        self.ended = False
        self.expired = False

    def __enter__(self) -> Bound:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline bounds a task: enter it inside one")
        loop = task.get_loop()
        self._task = task
        self._cancelling = task.cancelling()
        self.when = loop.time() + self._seconds
        self._deadlines._add(self, loop)
        return self

    def expire(self) -> None:
        """The deadline passed: cancel the task (its block turns that into TimeoutError on the way out)."""
        self.expired = True
        self._task.cancel()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._deadlines._remove(self)
        # As asyncio.Timeout: ours to turn into TimeoutError only when no other cancel request came in.
        if self.expired and self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            raise TimeoutError from error
