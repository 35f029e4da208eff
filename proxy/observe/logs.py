"""JSON log lines on stderr, one object per line (the access log has its own writer:
:mod:`proxy.observe.access`).

Lines are scrubbed (:mod:`proxy.observe.scrub`) like Sentry reports: log collectors keep what they
get for months, so a phone number or token in a message or an ``extra`` field is masked here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from proxy.events import BreakerTransition
from proxy.observe.library_logs import protect_library_logs
from proxy.observe.scrub import scrub_text, scrub_value

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` on one line, scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub_text(record.getMessage()),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = scrub_value(value, key)
        if record.exc_info:
            line["exc"] = scrub_text(self.formatException(record.exc_info))
        elif record.exc_text:  # a traceback already rendered (library records, see library_logs)
            line["exc"] = scrub_text(record.exc_text)
        return json.dumps(line, default=str, separators=(",", ":"))


def configure_logging(level: str) -> None:
    """Send every log record to stderr as JSON; what libraries log about client requests is cut
    to what happened, never what was sent (:mod:`proxy.observe.library_logs`)."""
    protect_library_logs()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())



_TRANSITIONS = logging.getLogger("resilience_proxy.breaker")


EVENTS = (BreakerTransition,)
"""The events :func:`on_event` logs (the bus hands it no other)."""


def on_event(event: object) -> None:
    """The EventBus listener: the events that make a log line of their own."""
    if isinstance(event, BreakerTransition):
        log_breaker_transition(event)


def log_breaker_transition(transition: BreakerTransition) -> None:
    """One log line per transition this process made (openings as warnings)."""
    level = logging.WARNING if transition.to_state in ("open", "forced_open") else logging.INFO
    _TRANSITIONS.log(level, "breaker %s", transition.to_state, extra={
        "breaker": transition.key, "from": transition.from_state, "to": transition.to_state,
        "reason": transition.reason, "open_until": transition.open_until or None,
        "forced_by": transition.forced_by or None,
    })
