"""What each alert says: one section (emoji, one-line summary) and one context line, plus the
plain-text fallback Slack shows in notifications."""

from __future__ import annotations

from proxy.observe.alerts.format import duration, render
from proxy.observe.alerts.rules import (
    BackendDown,
    BackendUp,
    BreakerOpened,
    BreakerOverridden,
    BreakerRecovered,
    ConfigRefused,
    ErrorRate,
    Flapping,
)


def lines(alert: object) -> tuple[str, str, str]:
    message = render(alert, "pod-7")  # type: ignore[arg-type]
    section, context = message.blocks
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert context["type"] == "context" and [e["type"] for e in context["elements"]] == ["mrkdwn"]
    return section["text"]["text"], context["elements"][0]["text"], message.text


def test_breaker_messages() -> None:
    assert lines(BreakerOpened("twilio", "twilio_sms", "3 consecutive failures", 30.0, "HTTP 503")) == (
        "🔴 *twilio_sms* circuit open: 3 consecutive failures",
        "upstream twilio, route twilio_sms · last error: HTTP 503 · fails fast for 30s, then probes · pod-7",
        "🔴 twilio_sms circuit open: 3 consecutive failures. upstream twilio, route twilio_sms · "
        "last error: HTTP 503 · fails fast for 30s, then probes · pod-7",
    )
    assert lines(BreakerRecovered("google", "default", "1 probe(s) succeeded", 754.2))[:2] == (
        "✅ *google* recovered after 12 min",
        "upstream google, route default · 1 probe(s) succeeded · pod-7",
    )
    assert lines(BreakerRecovered("google", "default", "1 probe(s) succeeded", None))[:2] == (
        "✅ *google* recovered",
        "upstream google, route default · 1 probe(s) succeeded · opened on another replica: downtime unknown here"
        " · pod-7",
    )
    assert lines(BreakerOverridden("twilio", "twilio_sms", "forced open", "oncall", "half_open"))[:2] == (
        "⛔ *twilio_sms* circuit forced open by oncall",
        "upstream twilio, route twilio_sms · was half open · every call fails fast · pod-7",
    )
    assert lines(Flapping("breaker", "twilio_sms", 7, 600.4, "closed"))[0] == (
        "🔁 *twilio_sms* opened 7 times in the last 10 min; now closed")


def test_backend_and_error_rate_messages() -> None:
    assert lines(BackendDown("redis"))[:2] == (
        "🟠 State backend redis unreachable",
        "breakers and rate limits now run per replica until it is back · pod-7")
    assert lines(BackendUp("redis", 95))[0] == "🟢 State backend redis back after 1 min 35s"
    assert lines(ErrorRate("google", True, 31, 50, 300, 0.5))[:2] == (
        "📈 *google* error rate 62% over the last 5 min", "31 of 50 requests failed · alert above 50% · pod-7")
    assert lines(ErrorRate("google", False, 4, 50, 300, 0.5))[0] == "📉 *google* error rate back to 8%"


def test_slack_markup_in_event_text_is_escaped() -> None:
    section, context, text = lines(BreakerOpened("api", "default", "failure rate <b> & more", 1.0,
                                                 "connection_terminated: <!channel> & co"))
    assert "&lt;b&gt; &amp; more" in section and "&lt;!channel&gt; &amp; co" in context
    assert "<" not in text and "<!channel>" not in context


def test_durations_read_like_a_person_would_say_them() -> None:
    assert [duration(s) for s in (0.4, 1, 59.6, 61, 600, 754, 3600, 3900)] == [
        "0s", "1s", "1 min", "1 min 1s", "10 min", "12 min", "1 h", "1 h 5 min"]


def test_a_refused_config_names_its_first_problems() -> None:
    problems = tuple(f"policies/twilio.yaml:{n}:5: upstreams.twilio.timeout: invalid duration '30'" for n in range(5))
    section, context, _ = lines(ConfigRefused(problems, "file"))
    assert section == "⚠️ Config reload refused: 5 problems; the running config stays"
    assert context == (" · ".join(problems[:3]) + " · and 2 more · reload after the files changed"
                       " · pod-7")
