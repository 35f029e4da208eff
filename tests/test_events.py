"""The event bus: each listener gets the events it asked for, in order, and one failing listener
stops no other."""

from __future__ import annotations

from proxy.events import AttemptEnded, BreakerTransition, EventBus, RequestEnded

ENDED = RequestEnded("r-1", "api", "default", "GET", 200, 0.01, 1)
ATTEMPT = AttemptEnded("api", "default", 1, 200, None, 0.01)
TRANSITION = BreakerTransition("api/default", "closed", "open", "3 failures", 0.0)


def test_a_listener_gets_only_the_types_it_names_and_one_without_types_gets_all() -> None:
    bus, everything, requests = EventBus(), [], []
    bus.subscribe(everything.append)
    bus.subscribe(requests.append, (RequestEnded,))
    for event in (ENDED, ATTEMPT, TRANSITION, ENDED):
        bus.emit(event)
    assert everything == [ENDED, ATTEMPT, TRANSITION, ENDED]
    assert requests == [ENDED, ENDED]


def test_a_listener_subscribed_later_gets_the_next_events_of_a_type_already_emitted() -> None:
    bus, late = EventBus(), []
    bus.emit(ENDED)
    bus.subscribe(late.append, (RequestEnded,))
    bus.emit(ENDED)
    assert late == [ENDED]


def test_a_failing_listener_is_skipped_and_the_others_still_run() -> None:
    bus, seen = EventBus(), []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    bus.emit(ATTEMPT)
    assert seen == [ATTEMPT]
