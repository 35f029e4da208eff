"""The status page's transition history: this process's from events, other replicas' from the shared views."""

from __future__ import annotations

from proxy.events import BreakerTransition
from proxy.observe.transitions import TransitionLog
from proxy.policy.breaker import State
from proxy.state.base import BreakerView

KEY = "twilio/twilio_sms"
NOW = 1_800_000_000.0


def view(state: State, changed_at: float, reason: str = "", open_until: float = 0.0) -> BreakerView:
    return BreakerView(KEY, state, open_until=open_until, reason=reason, changed_at=changed_at)


def test_a_transition_made_here_is_told_once_though_the_view_shows_it_too() -> None:
    log = TransitionLog()
    assert log.observe([view(State.CLOSED, 0)], NOW) == [], "the first look only learns the state"
    seen = log.record(BreakerTransition(KEY, "closed", "open", "3 consecutive failures", NOW, NOW + 30))
    assert (seen.upstream, seen.route, seen.from_state, seen.to_state, seen.here) == (
        "twilio", "twilio_sms", "closed", "open", True)
    assert log.observe([view(State.OPEN, NOW, "3 consecutive failures", NOW + 30)], NOW + 0.25) == []
    assert [s.to_state for s in log.recent()] == ["open"]


def test_a_transition_another_replica_made_is_seen_in_the_view_with_its_reason() -> None:
    log = TransitionLog()
    log.observe([view(State.OPEN, NOW, "3 consecutive failures", NOW + 30)], NOW)
    (seen,) = log.observe([view(State.CLOSED, NOW + 31, "1 probe(s) succeeded")], NOW + 31.1)
    assert (seen.from_state, seen.to_state, seen.reason, seen.at, seen.here) == (
        "open", "closed", "1 probe(s) succeeded", NOW + 31, False)


def test_a_reopening_seen_between_two_looks_counts_as_a_change() -> None:
    """open -> half_open -> open elsewhere, between two looks: same state, a newer change."""
    log = TransitionLog()
    log.observe([view(State.OPEN, NOW, "3 consecutive failures")], NOW)
    (seen,) = log.observe([view(State.OPEN, NOW + 30, "probe failed")], NOW + 30.2)
    assert (seen.from_state, seen.to_state, seen.reason) == ("open", "open", "probe failed")


def test_a_breaker_the_store_forgot_is_told_at_the_time_it_was_seen() -> None:
    log = TransitionLog()
    log.observe([view(State.OPEN, NOW, "3 consecutive failures")], NOW)
    (seen,) = log.observe([view(State.CLOSED, 0)], NOW + 5)
    assert (seen.to_state, seen.at, seen.reason) == ("closed", NOW + 5, "no longer in the shared state")


def test_only_the_newest_are_kept_newest_first() -> None:
    log = TransitionLog(keep=3)
    for i in range(5):
        log.record(BreakerTransition(KEY, "closed", "open", f"#{i}", NOW + i))
    assert [s.reason for s in log.recent()] == ["#4", "#3", "#2"]
