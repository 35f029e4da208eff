"""The breaker state machine with a fake clock: no event loop, no sleeping."""

from __future__ import annotations

import pytest

from proxy.config.policy_values import BreakerPolicy
from proxy.policy import breaker
from proxy.policy.breaker import Action, BreakerRecord, State

KEY = "twilio/twilio_sms"


def no_jitter() -> float:
    return 0.5  # the middle of the jitter range: exactly the nominal open time


def fail(record: BreakerRecord, policy: BreakerPolicy, now: float, times: int = 1, probe: bool = False):
    transition = None
    for _ in range(times):
        transition = breaker.record_outcome(KEY, record, policy, True, probe, now, no_jitter) or transition
    return transition


def succeed(record: BreakerRecord, policy: BreakerPolicy, now: float, probe: bool = False):
    return breaker.record_outcome(KEY, record, policy, False, probe, now, no_jitter)


def test_opens_after_consecutive_failures_and_a_success_resets_the_count() -> None:
    policy, record = BreakerPolicy(consecutive_failures=3), BreakerRecord()
    assert fail(record, policy, 0.0, times=2) is None
    succeed(record, policy, 0.0)
    assert fail(record, policy, 0.0, times=2) is None
    transition = fail(record, policy, 1.0)
    assert (transition.from_state, transition.to_state, transition.reason) == ("closed", "open", "3 consecutive failures")
    assert transition.open_until == 31.0
    assert record.state == State.OPEN


def test_open_rejects_with_the_time_left_then_admits_one_probe() -> None:
    policy, record = BreakerPolicy(consecutive_failures=1, open_for=30), BreakerRecord()
    fail(record, policy, 100.0)
    rejected = breaker.admit(KEY, record, policy, 110.0, no_jitter)
    assert (rejected.allowed, rejected.retry_after) == (False, 20.0)
    probe = breaker.admit(KEY, record, policy, 130.0, no_jitter)
    assert (probe.allowed, probe.probe, probe.transition.to_state) == (True, True, "half_open")
    second = breaker.admit(KEY, record, policy, 130.5, no_jitter)
    assert second.allowed is False


def test_probe_success_closes_and_probe_failure_reopens_for_longer() -> None:
    policy = BreakerPolicy(consecutive_failures=1, open_for=10, open_for_max=25, open_multiplier=2)
    record = BreakerRecord()
    fail(record, policy, 0.0)
    assert breaker.admit(KEY, record, policy, 10.0, no_jitter).probe
    reopened = fail(record, policy, 10.5, probe=True)
    assert (reopened.to_state, reopened.reason, reopened.open_until) == ("open", "probe failed", 30.5)
    assert breaker.admit(KEY, record, policy, 30.5, no_jitter).probe
    again = fail(record, policy, 31.0, probe=True)
    assert again.open_until == 31.0 + 25  # 10 * 2**2 = 40, capped at 25
    assert breaker.admit(KEY, record, policy, 56.0, no_jitter).probe
    closed = succeed(record, policy, 56.1, probe=True)
    assert (closed.from_state, closed.to_state) == ("half_open", "closed")
    fail(record, policy, 57.0)
    assert record.open_until == 67.0, "after closing, the open time starts from open_for again"


def test_several_probes_must_all_succeed() -> None:
    policy, record = BreakerPolicy(consecutive_failures=1, open_for=5, half_open_probes=2), BreakerRecord()
    fail(record, policy, 0.0)
    admissions = [breaker.admit(KEY, record, policy, 5.0, no_jitter) for _ in range(3)]
    assert [a.allowed for a in admissions] == [True, True, False]
    assert succeed(record, policy, 5.1, probe=True) is None
    assert succeed(record, policy, 5.2, probe=True).to_state == "closed"


def test_probes_that_never_report_give_their_slot_back_after_the_open_time() -> None:
    policy, record = BreakerPolicy(consecutive_failures=1, open_for=5), BreakerRecord()
    fail(record, policy, 0.0)
    assert breaker.admit(KEY, record, policy, 5.0, no_jitter).probe
    assert not breaker.admit(KEY, record, policy, 9.0, no_jitter).allowed
    assert breaker.admit(KEY, record, policy, 10.0, no_jitter).probe


def test_late_outcomes_from_before_the_trip_do_not_count() -> None:
    policy, record = BreakerPolicy(consecutive_failures=1, open_for=5), BreakerRecord()
    fail(record, policy, 0.0)
    assert succeed(record, policy, 0.1) is None and record.state == State.OPEN
    breaker.admit(KEY, record, policy, 5.0, no_jitter)
    assert fail(record, policy, 5.1) is None and record.state == State.HALF_OPEN


def test_failure_rate_needs_the_minimum_number_of_calls() -> None:
    policy = BreakerPolicy(consecutive_failures=0, failure_rate=0.5, window=10, min_calls=10)
    record = BreakerRecord()
    for i in range(4):
        assert fail(record, policy, float(i)) is None
        succeed(record, policy, float(i))
    assert succeed(record, policy, 4.0) is None  # 4 of 9 failed: not yet judged
    transition = fail(record, policy, 5.0)        # 5 of 10 = 50%
    assert transition.reason == "failure rate 50% over 10s (5/10 calls)"


def test_failure_rate_forgets_calls_older_than_the_window() -> None:
    policy = BreakerPolicy(consecutive_failures=0, failure_rate=0.5, window=10, min_calls=4)
    record = BreakerRecord()
    fail(record, policy, 0.0, times=3)
    for t in (11.0, 11.1, 11.2):
        succeed(record, policy, t)
    assert fail(record, policy, 11.3) is None, "the three old failures left the window"


def test_jitter_spreads_open_times_within_bounds() -> None:
    policy = BreakerPolicy(open_for=30, jitter=0.1)
    assert breaker.open_duration(policy, 0, lambda: 0.0) == pytest.approx(27.0)
    assert breaker.open_duration(policy, 0, lambda: 1.0) == pytest.approx(33.0)


@pytest.mark.parametrize(("action", "state", "admits"), [
    (Action.FORCE_OPEN, State.FORCED_OPEN, False), (Action.DISABLE, State.DISABLED, True),
])
def test_operator_overrides_hold_until_reset(action: Action, state: State, admits: bool) -> None:
    policy, record = BreakerPolicy(consecutive_failures=1), BreakerRecord()
    transition = breaker.force(KEY, record, action, "alice", 0.0)
    assert (transition.to_state, transition.forced_by, record.forced_by) == (state.value, "alice", "alice")
    fail(record, policy, 1.0, times=5)
    assert record.state == state, "outcomes do not move a forced breaker"
    assert breaker.admit(KEY, record, policy, 1000.0, no_jitter).allowed is admits
    reset = breaker.force(KEY, record, Action.RESET, "bob", 2.0)
    assert (reset.to_state, record.state, record.forced_by) == ("closed", State.CLOSED, "")


def test_a_success_resets_the_count_and_can_still_trip_a_failure_rate() -> None:
    """Successes leave a consecutive-failures breaker closed at once; with a failure-rate window they
    count as calls, and the call that reaches min_calls may be the one that trips it."""
    consecutive, record = BreakerPolicy(consecutive_failures=2), BreakerRecord()
    fail(record, consecutive, 0.0)
    assert succeed(record, consecutive, 0.0) is None and record.failures == 0 and record.version == 0
    rate = BreakerPolicy(consecutive_failures=0, failure_rate=0.5, min_calls=4, window=10)
    record = BreakerRecord()
    assert fail(record, rate, 0.0, times=2) is None
    assert succeed(record, rate, 0.0) is None
    transition = succeed(record, rate, 0.0)
    assert transition is not None and transition.reason.startswith("failure rate 50%")
