"""One timer for many calls: each call still gets its timeout, as ``asyncio.timeout`` would give it.

Real event loop, real time (short timeouts); waits poll for a state with a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from proxy.state.redis.deadlines import Deadlines


async def hang() -> None:
    await asyncio.Event().wait()


async def eventually(condition: object, deadline: float = 2.0) -> None:
    end = time.monotonic() + deadline
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_call_in_time_returns_and_one_past_its_deadline_raises_timeout_error() -> None:
    deadlines = Deadlines(0.05)
    with deadlines.call():
        await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(TimeoutError), deadlines.call():
        await hang()
    assert 0.04 <= time.monotonic() - started < 0.5
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0, "the expiry's cancellation was taken back"
    await eventually(lambda: deadlines._timer is None and not deadlines._running)


async def test_a_burst_shares_one_timer_and_only_the_calls_out_of_time_expire() -> None:
    deadlines = Deadlines(0.5)
    armed = 0
    loop = asyncio.get_running_loop()
    call_at = loop.call_at

    def counting_call_at(when: float, callback: object, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        nonlocal armed
        armed += callback == deadlines._expire
        return call_at(when, callback, *args, **kwargs)  # type: ignore[arg-type]

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        async def quick(n: int) -> int:
            with deadlines.call():
                await asyncio.sleep(0.001 * (n % 5))
            return n

        async def stuck() -> None:
            with deadlines.call():
                await hang()

        results = await asyncio.gather(*(quick(n) for n in range(200)), *(stuck() for _ in range(3)),
                                       return_exceptions=True)
    finally:
        del loop.call_at  # type: ignore[method-assign]
    assert results[:200] == list(range(200))
    assert all(isinstance(r, TimeoutError) for r in results[200:])
    assert armed <= 3, f"{armed} timers for 203 calls"


async def test_a_cancellation_from_elsewhere_passes_through_untouched() -> None:
    deadlines = Deadlines(5.0)

    async def waiting() -> None:
        with deadlines.call():
            await hang()

    task = asyncio.create_task(waiting())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadlines.close()


async def test_each_call_ends_as_it_would_under_asyncio_timeout() -> None:
    """The same calls (in time, hung, cancelled by the caller meanwhile) under both: the same outcomes."""
    deadlines = Deadlines(0.05)

    async def ours(work: Callable[[], Awaitable[None]]) -> None:
        with deadlines.call():
            await work()

    async def theirs(work: Callable[[], Awaitable[None]]) -> None:
        async with asyncio.timeout(0.05):
            await work()

    async def in_time() -> None:
        await asyncio.sleep(0.001)

    async def outcome(guarded: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]],
                      work: Callable[[], Awaitable[None]], cancel: bool) -> str:
        task = asyncio.create_task(guarded(work))
        if cancel:
            await asyncio.sleep(0.01)
            task.cancel()
        try:
            await task
        except TimeoutError:
            return "timeout"
        except asyncio.CancelledError:
            return "cancelled"
        return "done"

    for work, cancel, expected in ((in_time, False, "done"), (hang, False, "timeout"), (hang, True, "cancelled")):
        assert await outcome(ours, work, cancel) == await outcome(theirs, work, cancel) == expected
