"""Webhook alerts, pure: dead letters told once per fleet and damped into a count, backlog age against
``alerts.slack.webhook_backlog_age``; events in, alerts out, time from a FakeClock."""

from __future__ import annotations

from proxy.clock import FakeClock
from proxy.config.model import SlackSettings
from proxy.events import WebhookQueueSampled, WebhookSettled
from proxy.observe.alerts.damping import CountGate, Held
from proxy.observe.alerts.format import render
from proxy.observe.alerts.rules import AlertRules, Flapping, WebhookBacklog, WebhookDeadLetters


def rules(clock: FakeClock, **settings: float) -> AlertRules:
    return AlertRules(SlackSettings(token="xoxb-test", channel="#alerts", **settings), clock)  # type: ignore[arg-type]


def dead(webhook: str = "twilio_status") -> WebhookSettled:
    return WebhookSettled(webhook, "dead_letter", 8, 120.0)


def test_the_first_dead_letter_is_told_at_once_and_the_rest_as_one_count_per_interval() -> None:
    clock = FakeClock()
    r = rules(clock, flap_interval=600)
    assert r.on_event(dead()) == [WebhookDeadLetters("twilio_status", 1)]
    told = [a for _ in range(40) for a in r.on_event(dead())]
    assert told == []
    assert r.next_due() == clock.now() + 600
    clock.advance(599)
    assert r.due() == []
    clock.advance(1)
    assert r.due() == [WebhookDeadLetters("twilio_status", 40, 600.0)]
    # Quiet for another interval: nothing to summarise, and the next dead letter is told at once again.
    clock.advance(600)
    assert r.due() == []
    assert r.on_event(dead()) == [WebhookDeadLetters("twilio_status", 1)]


def test_dead_letters_are_counted_per_webhook_and_completions_say_nothing() -> None:
    clock = FakeClock()
    r = rules(clock, flap_interval=600)
    assert r.on_event(WebhookSettled("twilio_status", "completed", 1, 0.2)) == []
    assert r.on_event(dead("twilio_status")) == [WebhookDeadLetters("twilio_status", 1)]
    assert r.on_event(dead("calendar_push")) == [WebhookDeadLetters("calendar_push", 1)]


def test_count_gate_holds_what_arrives_after_the_interval_until_the_summary() -> None:
    gate = CountGate(60)
    assert gate.add("a", 0) is True
    assert gate.add("a", 10) is False
    assert gate.add("a", 70) is False  # interval over, but one is held: it joins the summary
    assert gate.due(70) == [Held("a", 2, 70)]
    assert gate.next_due() is None
    assert gate.add("a", 200) is True


def sampled(age: float | None, depth: int = 17, webhook: str = "twilio_status") -> WebhookQueueSampled:
    return WebhookQueueSampled(webhook, depth, age)


def test_a_backlog_older_than_the_threshold_is_told_once_and_its_clearing_once() -> None:
    clock = FakeClock()
    r = rules(clock, webhook_backlog_age=300, flap_interval=600)
    assert r.on_event(sampled(299.0)) == []
    assert r.on_event(sampled(300.0)) == [WebhookBacklog("twilio_status", True, 300.0, 17, 300)]
    assert r.on_event(sampled(320.0)) == []  # still high: said already
    assert r.on_event(sampled(None, depth=0)) == [WebhookBacklog("twilio_status", False, 0.0, 0, 300)]
    assert r.on_event(sampled(None, depth=0)) == []


def test_a_flapping_backlog_is_summarised_and_zero_turns_the_alert_off() -> None:
    clock = FakeClock()
    r = rules(clock, webhook_backlog_age=60, flap_interval=600)
    assert len(r.on_event(sampled(61.0))) == 1
    assert len(r.on_event(sampled(1.0))) == 1
    for _ in range(3):
        clock.advance(10)
        assert r.on_event(sampled(61.0)) == []
        assert r.on_event(sampled(1.0)) == []
    clock.advance(600)
    assert r.due() == [Flapping("webhook_backlog", "twilio_status", 4, 630.0, "below")]
    off = rules(clock, webhook_backlog_age=0)
    assert off.on_event(sampled(86400.0)) == []


def test_the_messages_name_the_webhook_the_count_and_the_admin_calls_and_nothing_else() -> None:
    first = render(WebhookDeadLetters("twilio_status", 1), "rp-7f9c")
    assert first.text.startswith("📮 twilio_status webhook event moved to dead letter")
    assert "GET /admin/webhooks/twilio_status/events?status=dead_letter" in first.text
    assert "POST /admin/webhooks/twilio_status/replay?status=dead_letter" in first.text
    summary = render(WebhookDeadLetters("twilio_status", 40, 600.0), "rp-7f9c")
    assert "40 more webhook events moved to dead letter in the last 10 min" in summary.text
    assert summary.blocks[0]["text"]["text"].startswith("📮 *twilio_status* 40 more")
    backlog = render(WebhookBacklog("calendar_push", True, 420.0, 17, 300.0), "rp-7f9c").text
    assert "oldest undelivered webhook event is 7 min old" in backlog and "17 events waiting" in backlog
    assert "alert above 5 min" in backlog
    assert render(WebhookBacklog("calendar_push", False, 0.0, 0, 300.0), "rp-7f9c").text.startswith(
        "✅ calendar_push webhook backlog cleared")
