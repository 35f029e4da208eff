"""Alerts as Slack messages: Block Kit that reads well on a phone, and the plain-text fallback.

Each message is one section (an emoji and a one-line summary, the breaker or upstream in bold)
and one context line with the details. ``text`` says the same in plain words: Slack shows it in
notifications and wherever blocks cannot be drawn. Pure: no Slack client here, only dicts.

Only event fields go in (names from the config, reasons, error types): never a token, header,
body or URL. Everything is escaped, since ``&``, ``<`` and ``>`` are markup in Slack text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.config.model import BreakerId
from proxy.observe.alerts.rules import (
    Alert,
    BackendDown,
    BackendUp,
    BreakerOpened,
    BreakerOverridden,
    BreakerRecovered,
    ConfigRefused,
    ErrorRate,
    Flapping,
    WebhookBacklog,
    WebhookDeadLetters,
)
from proxy.observe.scrub import scrub_text

SECTION_LIMIT = 3000
"""Slack refuses a section or context text longer than this."""


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[dict[str, Any]]


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def duration(seconds: float) -> str:
    """``45s``, ``12 min``, ``3 min 20s``, ``2 h 5 min``: rounded to what a reader needs."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs}s" if secs and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def render(alert: Alert, host: str) -> Message:
    """The message for ``alert``; ``host`` names the replica that sends it."""
    emoji, name, summary, details = _words(alert)
    details = [d for d in (*details, host) if d]
    headline = f"{emoji} *{escape(name)}* {escape(summary)}" if name else f"{emoji} {escape(summary)}"
    text = f"{emoji} {name} {summary}" if name else f"{emoji} {summary}"
    text = f"{text}. {' · '.join(details)}"
    context = " · ".join(escape(d) for d in details)
    return Message(
        text=escape(text)[:SECTION_LIMIT],
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": headline[:SECTION_LIMIT]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context[:SECTION_LIMIT]}]},
        ],
    )


def _words(alert: Alert) -> tuple[str, str, str, list[str]]:
    """(emoji, name in bold, the rest of the summary, details)."""
    match alert:
        case BreakerOpened():
            key = f"{alert.upstream}/{alert.route}"
            return ("🔴", BreakerId.parse(key).name, f"circuit open: {alert.reason}", [
                f"upstream {alert.upstream}, route {alert.route}",
                f"last error: {alert.last_error or 'none seen'}",
                f"fails fast for {duration(alert.open_for)}, then probes",
            ])
        case BreakerRecovered():
            key = f"{alert.upstream}/{alert.route}"
            how_long = "" if alert.down_for is None else f" after {duration(alert.down_for)}"
            return ("✅", BreakerId.parse(key).name, f"recovered{how_long}", [
                f"upstream {alert.upstream}, route {alert.route}",
                alert.reason,
                "opened on another replica: downtime unknown here" if alert.down_for is None else "",
            ])
        case BreakerOverridden():
            key = f"{alert.upstream}/{alert.route}"
            emoji, effect = {"forced open": ("⛔", "every call fails fast"),
                             "disabled": ("⚪", "every call passes, failures are not counted"),
                             "reset": ("↩️", "closed, counts cleared")}.get(alert.action, ("🛠️", ""))
            return (emoji, BreakerId.parse(key).name, f"circuit {alert.action} by {alert.by}", [
                f"upstream {alert.upstream}, route {alert.route}", f"was {alert.was.replace('_', ' ')}", effect,
            ])
        case BackendDown():
            return ("🟠", "", f"State backend {alert.backend} unreachable", [
                "breakers and rate limits now run per replica until it is back",
            ])
        case BackendUp():
            how_long = "" if alert.down_for is None else f" after {duration(alert.down_for)}"
            return ("🟢", "", f"State backend {alert.backend} back{how_long}", [
                "breakers and rate limits are shared by the fleet again",
            ])
        case ErrorRate():
            share = alert.failures / alert.requests if alert.requests else 0.0
            if alert.high:
                return ("📈", alert.upstream, f"error rate {share:.0%} over the last {duration(alert.window)}", [
                    f"{alert.failures} of {alert.requests} requests failed", f"alert above {alert.threshold:.0%}",
                ])
            return ("📉", alert.upstream, f"error rate back to {share:.0%}", [
                f"{alert.failures} of {alert.requests} requests failed in the last {duration(alert.window)}",
                f"alert above {alert.threshold:.0%}",
            ])
        case Flapping():
            return _flapping(alert)
        case WebhookDeadLetters() | WebhookBacklog():
            return _webhook(alert)
        case ConfigRefused():
            count = len(alert.problems)
            shown = [scrub_text(p)[:300] for p in alert.problems[:3]]
            more = [f"and {count - 3} more"] if count > 3 else []
            how = {"file": "the files changed", "signal": "SIGHUP", "admin": "POST /admin/reload"}.get(
                alert.trigger, alert.trigger)
            return ("⚠️", "", f"Config reload refused: {count} problem{'s' if count != 1 else ''}; "
                              "the running config stays", [*shown, *more, f"reload after {how}"])
    raise TypeError(f"no Slack message for {alert!r}")


def _flapping(alert: Flapping) -> tuple[str, str, str, list[str]]:
    window = duration(alert.window)
    damped = f"one alert per {window} at most; this summarises the rest"
    if alert.subject == "breaker":
        state = alert.now.replace("_", " ")
        return ("🔁", alert.name, f"opened {times(alert.downs)} in the last {window}; now {state}", [damped])
    if alert.subject == "backend":
        return ("🔁", "", f"State backend {alert.name} went down {times(alert.downs)} in the last {window}; "
                          f"now {alert.now}", [damped])
    if alert.subject == "webhook_backlog":
        return ("🔁", alert.name, f"webhook backlog crossed its threshold {times(alert.downs)} in the last "
                                  f"{window}; now {alert.now} it", [damped])
    return ("🔁", alert.name, f"error rate crossed its threshold {times(alert.downs)} in the last {window}; "
                              f"now {alert.now} it", [damped])


def _webhook(alert: WebhookDeadLetters | WebhookBacklog) -> tuple[str, str, str, list[str]]:
    """Dead letters and backlogs name the webhook and the admin call that shows (or replays) its events."""
    name = alert.webhook
    if isinstance(alert, WebhookDeadLetters):
        if alert.window is None:
            summary = "webhook event moved to dead letter: the app refused it (4xx) or every attempt failed"
        else:
            summary = (f"{alert.count} more webhook event{'s' if alert.count != 1 else ''} moved to dead letter "
                       f"in the last {duration(alert.window)}")
        return ("📮", name, summary, [
            f"list: GET /admin/webhooks/{name}/events?status=dead_letter",
            f"replay once the app is fixed: POST /admin/webhooks/{name}/replay?status=dead_letter",
        ])
    if alert.high:
        return ("⏳", name, f"oldest undelivered webhook event is {duration(alert.age)} old", [
            f"{alert.depth} event{'s' if alert.depth != 1 else ''} waiting", f"alert above {duration(alert.threshold)}",
            "is the app at deliver_to answering? GET /admin/webhooks",
        ])
    return ("✅", name, "webhook backlog cleared", [
        f"{alert.depth} event{'s' if alert.depth != 1 else ''} waiting", f"alert above {duration(alert.threshold)}",
    ])
