"""The alert decisions, pure: events in, alerts out, time from a FakeClock (no loop, no sleeping)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxy.clock import FakeClock
from proxy.config.model import SlackSettings
from proxy.events import AttemptEnded, BackendChanged, BreakerTransition, RequestEnded
from proxy.observe.alerts.damping import FailureWindow
from proxy.observe.alerts.format import render
from proxy.observe.alerts.rules import (
    AlertRules,
    BackendDown,
    BackendUp,
    BreakerOpened,
    BreakerOverridden,
    BreakerRecovered,
    ErrorRate,
    Flapping,
    request_failed,
)

KEY = "twilio/twilio_sms"


def rules(clock: FakeClock, **settings: float) -> AlertRules:
    return AlertRules(SlackSettings(token="xoxb-test", channel="#alerts", **settings), clock)  # type: ignore[arg-type]


def move(clock: FakeClock, frm: str, to: str, reason: str = "", open_for: float = 0.0, by: str = "",
         key: str = KEY) -> BreakerTransition:
    now = clock.now()
    return BreakerTransition(key, frm, to, reason, now, now + open_for if open_for else 0.0, by)


def flap(r: AlertRules, clock: FakeClock) -> list[object]:
    """One open-and-recover cycle, 30 s each way."""
    said = r.on_event(move(clock, "closed", "open", "3 consecutive failures", 30))
    clock.advance(30)
    said += r.on_event(move(clock, "open", "half_open", "open time elapsed"))
    said += r.on_event(move(clock, "half_open", "closed", "1 probe(s) succeeded"))
    clock.advance(30)
    return said


def test_an_opening_names_its_reason_the_last_error_and_how_long_it_stays_open() -> None:
    clock = FakeClock()
    r = rules(clock)
    r.on_event(AttemptEnded("twilio", "twilio_sms", 1, 0, "connection_refused", 0.01))
    r.on_event(RequestEnded("r1", "twilio", "twilio_sms", "POST", 503, 0.01, 1, "destination_unavailable",
                            "circuit twilio_sms open"))  # a fast-fail is not the upstream's error
    [opened] = r.on_event(move(clock, "closed", "open", "3 consecutive failures", open_for=30))
    assert opened == BreakerOpened("twilio", "twilio_sms", "3 consecutive failures", 30.0)

    # The memory store emits the transition before the tripping attempt's AttemptEnded: the last
    # error is looked up when the message leaves.
    r.on_event(AttemptEnded("twilio", "twilio_sms", 1, 503, None, 0.01))
    assert r.complete(opened) == BreakerOpened("twilio", "twilio_sms", "3 consecutive failures", 30.0, "HTTP 503")
    r.on_event(RequestEnded("r2", "twilio", "twilio_sms", "POST", 504, 10.0, 1, "http_response_timeout",
                            "twilio: no response in 10s"))
    assert r.last_error(KEY) == "http_response_timeout: twilio: no response in 10s"


def test_a_recovery_names_the_time_since_the_opening_and_a_failed_probe_is_the_same_outage() -> None:
    clock = FakeClock()
    r = rules(clock)
    r.on_event(move(clock, "closed", "open", "3 consecutive failures", 30))
    clock.advance(30)
    assert r.on_event(move(clock, "open", "half_open", "open time elapsed")) == []
    assert r.on_event(move(clock, "half_open", "open", "probe failed", 60)) == [], "still the same outage"
    clock.advance(60)
    r.on_event(move(clock, "open", "half_open", "open time elapsed"))
    clock.advance(0.5)
    assert r.on_event(move(clock, "half_open", "closed", "2 probe(s) succeeded")) == [
        BreakerRecovered("twilio", "twilio_sms", "2 probe(s) succeeded", 90.5)]


def test_a_recovery_whose_opening_another_replica_made_has_no_downtime() -> None:
    clock = FakeClock()
    assert rules(clock).on_event(move(clock, "half_open", "closed", "1 probe(s) succeeded")) == [
        BreakerRecovered("twilio", "twilio_sms", "1 probe(s) succeeded", None)]


def test_a_flapping_breaker_says_open_and_recovered_once_then_one_summary_per_interval() -> None:
    clock = FakeClock()
    r = rules(clock, flap_interval=600)
    started = clock.now()
    said = flap(r, clock)
    assert [type(a) for a in said] == [BreakerOpened, BreakerRecovered]
    for _ in range(6):  # 6 more cycles in the next 6 minutes: held, counted
        assert flap(r, clock) == []
        assert r.due() == []
    assert r.next_due() == started + 600

    clock.advance(started + 599.9 - clock.now())
    assert r.due() == []
    clock.advance(0.1)
    [summary] = r.due()
    assert summary == Flapping("breaker", "twilio_sms", 7, 600.0, "closed")
    assert render(summary, "pod-a").text.startswith("🔁 twilio_sms opened 7 times in the last 10 min; now closed.")
    assert r.due() == [] and r.next_due() is None

    # The summary counts as this interval's message: an opening right after it is held too...
    [held] = [flap(r, clock)]
    assert held == []
    clock.advance(600)
    assert r.due() == [Flapping("breaker", "twilio_sms", 1, 660.0, "closed")]
    # ...and once a whole interval passes quietly, the next opening is told at once.
    clock.advance(600)
    assert r.due() == []
    assert [type(a) for a in flap(r, clock)] == [BreakerOpened, BreakerRecovered]


def test_a_summary_that_says_open_lets_the_recovery_through() -> None:
    clock = FakeClock()
    r = rules(clock, flap_interval=120)
    flap(r, clock)
    r.on_event(move(clock, "closed", "open", "3 consecutive failures", 30))  # held
    clock.advance(120)
    assert r.due() == [Flapping("breaker", "twilio_sms", 2, 180.0, "open")]
    r.on_event(move(clock, "open", "half_open", "open time elapsed"))
    assert [type(a) for a in r.on_event(move(clock, "half_open", "closed", "1 probe(s) succeeded"))] == [
        BreakerRecovered]


def test_each_breaker_is_damped_on_its_own_and_a_zero_interval_tells_everything() -> None:
    clock = FakeClock()
    r = rules(clock, flap_interval=600)
    flap(r, clock)
    assert r.on_event(move(clock, "closed", "open", "x", 30, key="google/freebusy")) != []
    undamped = rules(clock, flap_interval=0)
    assert sum(len(flap(undamped, clock)) for _ in range(3)) == 6


def test_operator_overrides_are_always_told_with_who_did_it() -> None:
    clock = FakeClock()
    r = rules(clock)
    for _ in range(3):
        flap(r, clock)  # damped meanwhile: overrides are told anyway
    said = [*r.on_event(move(clock, "closed", "forced_open", "force-open by oncall", by="oncall")),
            *r.on_event(move(clock, "forced_open", "disabled", "disable by alice", by="alice")),
            *r.on_event(move(clock, "disabled", "closed", "reset by alice", by="alice"))]
    assert said == [BreakerOverridden("twilio", "twilio_sms", "forced open", "oncall", "closed"),
                    BreakerOverridden("twilio", "twilio_sms", "disabled", "alice", "forced_open"),
                    BreakerOverridden("twilio", "twilio_sms", "reset", "alice", "disabled")]


def test_the_state_backend_going_down_and_up_with_its_downtime_and_damping() -> None:
    clock = FakeClock()
    r = rules(clock, flap_interval=300)
    at = clock.now()
    assert r.on_event(BackendChanged("redis", False, at)) == [BackendDown("redis")]
    clock.advance(42)
    assert r.on_event(BackendChanged("redis", True, at + 42)) == [BackendUp("redis", 42.0)]
    for _ in range(3):
        clock.advance(10)
        assert r.on_event(BackendChanged("redis", False, clock.now())) == []
        clock.advance(1)
        assert r.on_event(BackendChanged("redis", True, clock.now())) == []
    clock.advance(300)
    assert r.due() == [Flapping("backend", "redis", 4, 375.0, "up")]


def ended(status: int, error: str | None = None, upstream: str = "twilio") -> RequestEnded:
    return RequestEnded("r", upstream, "twilio_sms", "POST", status, 0.01, 1, error)


def test_the_error_rate_is_told_once_crossing_above_and_once_back_below() -> None:
    clock = FakeClock()
    r = rules(clock, error_rate=0.5, error_window=60, error_min_requests=4)
    said = [a for _ in range(3) for a in r.on_event(ended(503))]
    assert said == [], "three requests are too few to judge"
    assert r.on_event(ended(502, "connection_refused")) == [ErrorRate("twilio", True, 4, 4, 60, 0.5)]
    assert [a for _ in range(3) for a in r.on_event(ended(503))] == [], "already told"
    said = [a for _ in range(8) for a in r.on_event(ended(200))]
    assert said == [ErrorRate("twilio", False, 7, 15, 60, 0.5)], "7/15 < 50%: back below, told once"
    assert r.on_event(ended(200, upstream="google")) == []


def test_the_error_rate_window_slides_and_counts_only_what_concerns_the_upstream() -> None:
    assert [request_failed(*case) for case in [
        (503, None), (502, "connection_refused"), (503, "destination_unavailable"), (200, None), (404, None),
        (429, None), (429, "http_request_denied"), (499, "client_disconnected"), (500, "proxy_internal_error"),
    ]] == [True, True, True, False, False, False, None, None, None]
    window, clock = FailureWindow(60), FakeClock()
    for _ in range(10):
        window.add(True, clock.now())
    clock.advance(30)
    assert window.add(False, clock.now()).share == pytest.approx(10 / 11)
    clock.advance(31)
    rate = window.add(False, clock.now())
    assert (rate.failures, rate.requests) == (0, 2), "the failures 61 s ago left the window"


def test_the_error_rate_is_off_at_zero() -> None:
    clock = FakeClock()
    r = rules(clock, error_rate=0.0, error_min_requests=1)
    assert [a for _ in range(50) for a in r.on_event(ended(503))] == []


@pytest.mark.parametrize("module", ["proxy.observe.alerts.rules", "proxy.observe.alerts.damping", "proxy.observe.alerts.format"])
def test_the_alert_decisions_and_messages_import_no_io_library(module: str) -> None:
    libraries = ["asyncio", "aiohttp", "redis", "slack_sdk", "sentry_sdk"]
    code = f"import sys, {module}; print(','.join(m for m in {libraries!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "", f"{module} pulled in {result.stdout.strip()}"
