"""One timer for every call of a store, instead of one per call: calls that all get the same timeout
expire in the order they started.

``async with asyncio.timeout(t)`` arms and cancels a timer per call; on the rate limiter's path, one
call per request, that cost several times the call's own work (bench/README.md, "Policy path"). Here
each call only joins a queue; a single timer, armed for the oldest call still running, cancels the
calls whose time is up and re-arms itself for the next one. A call cancelled that way raises
:class:`TimeoutError`, exactly as ``asyncio.timeout`` would (a cancellation from anywhere else
passes through untouched).

    with deadlines.call():
        return await lane.execute(...)
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

RESOLUTION = 0.001
"""Event loops run a timer up to their clock's resolution early (asyncio's and uvloop's: 1 ms or finer):
a call whose deadline is that close when the timer runs is out of time."""


class _Call:
    """One call under a deadline: the task to cancel and whether this queue cancelled it."""

    __slots__ = ("cancelling", "deadline", "done", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object], cancelling: int) -> None:
        self.deadline = deadline
        self.task = task
        self.cancelling = cancelling
        """The task's pending cancellations when the call began (a caller's own are not ours to turn)."""
        self.expired = False
        self.done = False

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.done = True
        if self.expired and exc_type is asyncio.CancelledError and self.task.uncancel() <= self.cancelling:
            raise TimeoutError from exc


class Deadlines:
    """Calls of one store, each given ``timeout`` seconds (on the running loop's clock)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._running: deque[_Call] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def call(self) -> _Call:
        """The context of one call from the current task; raises TimeoutError on the way out if time ran out."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.call() outside a task")
        started = _Call(loop.time() + self.timeout, task, task.cancelling())
        self._running.append(started)
        if self._timer is None:
            self._timer = loop.call_at(started.deadline, self._expire, loop)
        return started

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel every call past its deadline; re-arm for the oldest one still running."""
        self._timer = None
        now = loop.time()
        running = self._running
        while running:
            oldest = running[0]
            if oldest.done:
                running.popleft()
            elif oldest.deadline <= now + RESOLUTION:
                running.popleft()
                oldest.expired = True
                oldest.task.cancel()
            else:
                self._timer = loop.call_at(oldest.deadline, self._expire, loop)
                return

    def close(self) -> None:
        """Stop the timer (the calls still running keep running, without a deadline)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running.clear()
