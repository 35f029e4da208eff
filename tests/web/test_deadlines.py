"""Attempt deadlines on one shared timer behave as asyncio.timeout does, with a heap as small as the
attempts in flight."""

from __future__ import annotations

import asyncio

import pytest

from proxy.web.deadlines import Deadlines


async def test_a_block_past_its_deadline_raises_timeout_error_at_the_deadline() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError) as raised:
        with deadlines.bound(0.05):
            await asyncio.sleep(5)
    assert 0.05 <= loop.time() - started < 1
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)


async def test_a_block_that_ends_in_time_leaves_the_task_alone() -> None:
    deadlines = Deadlines()
    with deadlines.bound(0.05):
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the deadline: nothing cancels the task now
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]


async def test_an_earlier_deadline_set_later_fires_first() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}
    started = loop.time()

    async def attempt(name: str, seconds: float) -> None:
        try:
            with deadlines.bound(seconds):
                await asyncio.sleep(5)
        except TimeoutError:
            ended[name] = loop.time() - started

    slow = asyncio.create_task(attempt("slow", 0.5))
    await asyncio.sleep(0)
    await asyncio.gather(slow, attempt("fast", 0.05))
    assert 0.05 <= ended["fast"] < 0.4 <= 0.5 <= ended["slow"] < 2


async def test_a_cancel_from_elsewhere_is_a_cancel_not_a_timeout() -> None:
    deadlines = Deadlines()

    async def attempt() -> None:
        with deadlines.bound(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_elsewhere_wins_over_a_deadline_that_passed_too() -> None:
    deadlines = Deadlines()
    bounds = []

    async def attempt() -> None:
        with deadlines.bound(5) as bound:
            bounds.append(bound)
            await asyncio.sleep(5)

    task = asyncio.create_task(attempt())
    while not bounds:
        await asyncio.sleep(0)
    bounds[0].expire()  # the deadline passes ...
    task.cancel()  # ... and someone else cancels the task before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_heap_stays_as_small_as_the_bounds_in_flight() -> None:
    deadlines = Deadlines()
    held = []
    for _ in range(10):
        bound = deadlines.bound(30)
        bound.__enter__()
        held.append(bound)
    for _ in range(10_000):
        with deadlines.bound(30):
            pass
        assert len(deadlines._heap) <= 2 * 10 + 64
    for bound in held:
        bound.__exit__(None, None, None)
    deadlines.close()
