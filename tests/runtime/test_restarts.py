"""The ``--workers`` restart rule, with the times passed in."""

from __future__ import annotations

from proxy.runtime.restarts import RestartRule, WorkerSlot

RULE = RestartRule(initial=0.5, max_delay=4.0, give_up_after=5, stable_after=60.0)


def test_a_worker_that_never_becomes_ready_is_restarted_ever_later_then_given_up() -> None:
    slot, now, delays = WorkerSlot(RULE), 0.0, []
    for _ in range(5):
        slot.started(now)
        now += 0.3
        delays.append(slot.died(now))
        now += delays[-1] or 0
    assert delays == [0.5, 1.0, 2.0, 4.0, None]


def test_the_delay_is_capped() -> None:
    slot = WorkerSlot(RestartRule(initial=1.0, max_delay=4.0, give_up_after=100))
    delays = []
    for second in range(8):
        slot.started(float(second))
        delays.append(slot.died(second + 0.1))
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_a_worker_that_became_ready_resets_the_give_up_count_but_not_the_backoff() -> None:
    slot = WorkerSlot(RULE)
    for start in (0.0, 10.0, 20.0, 30.0):
        slot.started(start)
        slot.died(start + 0.1)
    slot.started(40.0)
    slot.ready(41.0)
    assert slot.died(42.0) == 4.0, "crashing soon after start still backs off"
    for start in (50.0, 60.0, 70.0, 80.0):
        slot.started(start)
        assert slot.died(start + 0.1) is not None, "four unready deaths after a ready one: not yet"


def test_a_worker_that_served_a_while_starts_the_count_again() -> None:
    slot = WorkerSlot(RULE)
    for start in (0.0, 10.0, 20.0):
        slot.started(start)
        slot.died(start + 0.1)
    slot.started(30.0)
    slot.ready(31.0)
    assert slot.died(31.0 + 60.0) == 0.5
