"""Sentry error reports: requests that finally failed upstream, and the sidecar's own unexpected
exceptions, scrubbed of personal data and secrets before they leave the process.

What is reported:

- a request the sidecar answered 502/504 itself after its retries (connection refused, timeouts,
  broken responses): one event per request, fingerprinted ``upstream-failure/<upstream>/<route>/<kind>``
  so Sentry groups by what failed, never by phone number or message text;
- any log record at error level that carries an exception (``log.exception(...)``: the data plane's
  "unexpected error while proxying", a failing event listener, aiohttp's own handler errors);
- as breadcrumbs only: breaker transitions, state-backend changes, inbound webhook events moved to
  dead letter (the webhook's name and the attempts: never a payload), and info-and-up log lines.

Inbound webhooks carry PII (phone numbers, message texts) and secrets (signatures, channel tokens):
nothing here reads a webhook request; what a log line says about one goes through the scrubber, which
drops an event value's body (as a value or in its repr) and headers named like a secret.

Not reported: answers the sidecar gives on purpose (4xx, rate limits, an open breaker's 503) and
error logs without an exception (backend down: a Slack alert's business, kept as a breadcrumb).

How sentry-sdk is set up, deliberately:

- Integrations are listed, not discovered (``default_integrations`` and ``auto_enabling_integrations``
  off). Left on, the SDK instruments aiohttp's server (a transaction per request) and client, Redis
  and ``http.client`` (breadcrumbs with URLs and commands, i.e. API keys and rate-limit keys), adds
  ``sys.argv`` and every installed module to events and hooks ``sys.excepthook`` and ``atexit``.
  Only logging and de-duplication are kept.
- No tracing, no profiling, no sessions, no local variables in stack frames (they hold request
  bodies and headers), ``send_default_pii`` off (which alone would still send request bodies and
  non-denylisted headers: every event also goes through :func:`proxy.observe.scrub.scrub_event`).
- Capturing serializes the event on the calling thread (bench/README.md has what it cost) and queues it;
  a background thread sends it. A dead or hanging Sentry therefore never blocks a request, but an
  outage that fails every request would pay that cost per request: reports are limited per
  fingerprint (``burst`` per ``window``; the number left out rides on the next report).
- The SDK is imported only when a DSN is configured: without one this module loads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.config.model import SentrySettings
from proxy.events import BackendChanged, BreakerTransition, RequestEnded, WebhookSettled
from proxy.observe.library_logs import protect_library_logs
from proxy.observe.scrub import scrub_breadcrumb, scrub_event
from proxy.policy.classify import worth_reporting

CLOSE_TIMEOUT = 2.0
"""Longest wait for queued reports at shutdown: a dead Sentry must not hold up a rollout."""
SEND_TIMEOUT = 5.0
"""Per envelope upload (the SDK's default is 30 s, during which its one sender thread is stuck)."""
# Log lines already reported as breadcrumbs from events, with more detail.
_DUPLICATE_LOGGERS = frozenset({"resilience_proxy.breaker"})


@dataclass
class _Window:
    started: float
    sent: int = 0
    suppressed: int = 0


class ReportLimit:
    """At most ``burst`` reports per key in each ``window`` seconds; the rest are only counted.

    Sentry groups repeats into one issue anyway; Prometheus has the true failure rate.
    """

    def __init__(self, burst: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.window, self._clock = burst, window, clock
        self._windows: dict[tuple[str, ...], _Window] = {}

    def admit(self, key: tuple[str, ...]) -> int | None:
        """None when this report is left out; otherwise how many were left out since the last one."""
        now = self._clock()
        current = self._windows.get(key)
        if current is None or now - current.started >= self.window:
            suppressed = current.suppressed if current else 0
            current = self._windows[key] = _Window(now, suppressed=suppressed)
        if current.sent >= self.burst:
            current.suppressed += 1
            return None
        current.sent += 1
        suppressed, current.suppressed = current.suppressed, 0
        return suppressed


class SentryReporter:
    """Listens on the event bus; reports final failures and unexpected exceptions to Sentry, scrubbed."""

    def __init__(self, settings: SentrySettings, *, limit: ReportLimit | None = None,
                 close_timeout: float = CLOSE_TIMEOUT) -> None:
        self.settings = settings
        self.limit = limit or ReportLimit()
        self.close_timeout = close_timeout
        self._sdk: Any = None
        """The ``sentry_sdk`` module once started; None before and after."""
        self._client: Any = None

    async def start(self) -> None:
        """Initialise sentry-sdk (global state: one reporter per process)."""
        import sentry_sdk

        protect_library_logs()  # its logging integration reads aiohttp's records too
        sentry_sdk.init(**sdk_options(self.settings))
        self._sdk, self._client = sentry_sdk, sentry_sdk.get_client()

    def on_event(self, event: object) -> None:
        """The bus listener: returns at once (capture only queues the report)."""
        if self._sdk is None:
            return
        if isinstance(event, RequestEnded):
            if event.upstream is not None and worth_reporting(event.status, event.error):
                self._report_failure(event)
        elif isinstance(event, BreakerTransition):
            reason = f": {event.reason}" if event.reason else ""
            forced = f" (by {event.forced_by})" if event.forced_by else ""
            self._breadcrumb("breaker", f"breaker {event.key} {event.to_state}{reason}{forced}",
                             "warning" if event.to_state in ("open", "forced_open") else "info",
                             {"breaker": event.key, "from": event.from_state, "to": event.to_state})
        elif isinstance(event, BackendChanged):
            self._breadcrumb("state", f"state backend {event.backend} {'up' if event.up else 'down'}",
                             "info" if event.up else "error", {"backend": event.backend})
        elif isinstance(event, WebhookSettled) and event.outcome == "dead_letter":
            self._breadcrumb("webhook", f"webhook {event.webhook} event moved to dead letter after {event.attempts} "
                             "attempt(s)", "warning", {"webhook": event.webhook, "attempts": event.attempts})

    def _report_failure(self, event: RequestEnded) -> None:
        upstream, route, kind = event.upstream or "", event.route or "default", event.error or ""
        suppressed = self.limit.admit((upstream, route, kind))
        if suppressed is None:
            return
        attempts = f"{event.attempts} attempt{'' if event.attempts == 1 else 's'}"
        self._sdk.capture_event({
            "message": f"{upstream}/{route}: {kind} after {attempts}",
            "level": "error",
            "logger": "resilience_proxy.upstream",
            "fingerprint": ["upstream-failure", upstream, route, kind],
            "tags": {"upstream": upstream, "route": route, "error": kind, "attempts": str(event.attempts),
                     "status": str(event.status), "method": event.method, "request_id": event.request_id},
            "extra": {"detail": event.message, "seconds": round(event.seconds, 3),
                      "left_out_since_last_report": suppressed},
        })

    def _breadcrumb(self, category: str, message: str, level: str, data: dict[str, Any]) -> None:
        # Process-wide facts go on the global scope, so every later event shows them whichever
        # request (asyncio task) reports it.
        self._sdk.get_global_scope().add_breadcrumb(category=category, message=message, level=level, data=data)

    async def close(self) -> None:
        """Flush queued reports for at most ``close_timeout`` (in a thread: the SDK's flush blocks), then
        shut the client down and leave the process as if the SDK had never been initialised."""
        sdk, client, self._sdk, self._client = self._sdk, self._client, None, None
        if sdk is None:
            return
        await asyncio.to_thread(client.close, timeout=self.close_timeout)
        scope = sdk.get_global_scope()
        if scope.client is client:
            scope.set_client(None)
        scope.clear_breadcrumbs()


def sdk_options(settings: SentrySettings) -> dict[str, Any]:
    """Keyword arguments for ``sentry_sdk.init`` (see the module docstring for why each)."""
    from sentry_sdk.consts import DEFAULT_OPTIONS
    from sentry_sdk.integrations.dedupe import DedupeIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.transport import HttpTransport

    class Transport(HttpTransport):
        TIMEOUT = SEND_TIMEOUT  # HttpTransport's urllib3 total timeout per upload (a class attribute)

    options: dict[str, Any] = {
        "dsn": settings.dsn,
        "environment": settings.environment,
        "release": settings.release,
        "include_local_variables": False,
        "default_integrations": False,
        "auto_enabling_integrations": False,
        "integrations": [LoggingIntegration(level=logging.INFO, event_level=logging.ERROR), DedupeIntegration()],
        "traces_sample_rate": None,
        "profiles_sample_rate": None,
        "auto_session_tracking": False,
        "enable_backpressure_handling": False,  # only adjusts trace sampling, in one more thread
        "before_send": before_send,
        "before_breadcrumb": before_breadcrumb,
        "transport": Transport,
        "shutdown_timeout": CLOSE_TIMEOUT,
    }
    if "data_collection" not in DEFAULT_OPTIONS:
        # sentry-sdk 2.75 deprecates send_default_pii for data_collection; leaving both unset there
        # means send_default_pii=False (and the request body is still collected: before_send drops it).
        options["send_default_pii"] = False
    return options


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Every event, last thing before it is queued: scrubbed; an error log without an exception is
    dropped (it stays a breadcrumb). If this raised, the SDK would drop the event: fail closed."""
    if "log_record" in hint and "exception" not in event:
        return None
    return scrub_event(event)


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    """Every breadcrumb, before it is kept in memory: scrubbed; log lines that repeat an event's crumb dropped."""
    if crumb.get("category") in _DUPLICATE_LOGGERS:
        return None
    return scrub_breadcrumb(crumb)
