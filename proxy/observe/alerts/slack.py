"""Slack alerts: the bus listener decides and queues; one background task talks to Slack.

Only :meth:`SlackAlerts.on_event` runs in the request path, and it only asks
:class:`~proxy.observe.alerts.rules.AlertRules` what to say and puts that on a bounded queue: when the
queue is full the new alert is dropped (a warning, and ``AlertSent(..., "dropped")``). One sender
task posts them in order with slack-sdk's ``AsyncWebClient.chat_postMessage``, each call bounded
by ``call_timeout``, so a dead or hanging Slack delays alerts and never requests.

Delivery: a 429 waits for its ``Retry-After`` (capped); 5xx answers, timeouts, broken connections
and ``{"ok": false}`` answers are tried again after a backoff, up to ``attempts``; an answer that
no retry can change (``invalid_auth``, ``channel_not_found``...) fails at once. Then the alert
is dropped with a log line and ``AlertSent(..., "failed")``; success is ``AlertSent(..., "sent")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from proxy.clock import Clock, SystemClock
from proxy.config.model import SlackSettings
from proxy.events import AlertSent
from proxy.observe.alerts.format import Message, render
from proxy.observe.alerts.rules import Alert, AlertRules
from proxy.policy.retry import parse_retry_after

log = logging.getLogger("resilience_proxy.alerts")

PERMANENT_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
    "missing_scope", "not_allowed_token_type", "channel_not_found", "not_in_channel", "is_archived",
    "restricted_action", "invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text",
    "invalid_arguments", "invalid_charset",
})
"""``{"ok": false}`` answers that the same request will get again: retrying them only delays the queue."""


@dataclass(frozen=True)
class Delivery:
    """How hard to try Slack (tests shorten the waits)."""

    attempts: int = 3
    backoff: float = 1.0
    """Wait after the first failed attempt; doubles after each."""
    call_timeout: float = 5.0
    """Per call to Slack, so that a hanging Slack never holds the queue for long."""
    max_retry_after: float = 30.0
    """Cap on a 429's Retry-After."""
    close_grace: float = 2.0
    """How long :meth:`SlackAlerts.close` lets queued alerts leave before dropping them."""


DELIVERY = Delivery()


class SlackAlerts:
    """Listens on the event bus; queues messages and sends them in the background, never in the request path."""

    def __init__(self, settings: SlackSettings, emit: Callable[[object], None], *,
                 delivery: Delivery | None = None, clock: Clock | None = None, host: str | None = None) -> None:
        self.settings = settings
        self._emit = emit
        self._delivery = delivery or DELIVERY
        self._clock = clock or SystemClock()
        self._rules = AlertRules(settings, self._clock)
        self._host = host or socket.gethostname()
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(settings.queue_size)
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._sender: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None

    def on_event(self, event: object) -> None:
        """The bus listener: decides and enqueues, and returns at once."""
        for alert in self._rules.on_event(event):
            self._enqueue(alert)

    def _enqueue(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            # Alerts are damped, so drops are few; the log line keeps what Slack would have shown.
            log.warning("Slack alert dropped, %d already wait for Slack: %s", self._queue.qsize(),
                        render(alert, self._host).text, extra={"alert": alert.kind})
            self._emit(AlertSent("slack", alert.kind, "dropped"))

    async def start(self) -> None:
        """Open the client and start the sender; Slack is not contacted before this returns."""
        delivery = self._delivery
        # The SDK opens (and closes) a new session, so a new TLS connection, per call unless given
        # one; and with a session of ours its own ``timeout`` is ignored: the session's applies.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=delivery.call_timeout))
        # retry_handlers=[]: the SDK's retries happen inside one call, out of sight. Its default
        # retries connection errors once more (doubling our attempts); its RateLimitErrorRetryHandler
        # sleeps the whole Retry-After, uncapped, and neither covers 5xx or {"ok": false}. The loop
        # in _deliver does all of it, capped, and logs and counts each outcome.
        self._client = AsyncWebClient(token=self.settings.token, base_url=self.settings.base_url,
                                      session=self._session, retry_handlers=[])
        # The token check runs beside the sender, never before it: with Slack hanging it takes up to
        # call_timeout, and a breaker that opens in the first seconds must not wait for it.
        self._checker = asyncio.create_task(self._verify_token(), name="slack-token-check")
        self._sender = asyncio.create_task(self._run(), name="slack-alerts")

    async def close(self) -> None:
        """Let queued alerts leave for up to ``close_grace``, then drop the rest (each counted)."""
        checker, self._checker = self._checker, None
        if checker is not None:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checker
        sender, self._sender = self._sender, None
        if sender is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._delivery.close_grace):
                    await self._queue.join()
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        left = 0
        while not self._queue.empty():
            self._drop(self._queue.get_nowait())
            left += 1
        if left:
            log.warning("%d Slack alert(s) not sent at shutdown", left)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _drop(self, alert: Alert) -> None:
        self._emit(AlertSent("slack", alert.kind, "dropped"))

    async def _run(self) -> None:
        while True:
            for alert in self._rules.due():
                self._enqueue(alert)
            try:
                async with asyncio.timeout(self._idle_wait()):
                    alert = await self._queue.get()
            except TimeoutError:
                continue
            try:
                await self._deliver(alert)
            except asyncio.CancelledError:
                self._drop(alert)
                raise
            except Exception:
                log.exception("sending a Slack alert failed", extra={"alert": alert.kind})
                self._emit(AlertSent("slack", alert.kind, "failed"))
            finally:
                self._queue.task_done()

    def _idle_wait(self) -> float:
        """Until a flap summary is due, at most a second (a summary may become owed meanwhile)."""
        due = self._rules.next_due()
        return 1.0 if due is None else min(1.0, max(0.01, due - self._clock.now()))

    async def _verify_token(self) -> None:
        """``auth.test`` once, so that a wrong token or an unreachable Slack shows in the log at start."""
        assert self._client is not None
        try:
            async with asyncio.timeout(self._delivery.call_timeout):
                answer = await self._client.auth_test()
        except SlackApiError as error:
            log.error("Slack refused the alert token (%s): alerts will fail until it is fixed",
                      _refusal(error.response)[0])
        except Exception as error:
            log.warning("could not verify the Slack token (%s); alerts will still be tried", _describe(error))
        else:
            log.info("Slack alerts go to %s as %s", self.settings.channel, answer.get("user"),
                     extra={"team": answer.get("team")})

    async def _deliver(self, alert: Alert) -> None:
        message = render(self._rules.complete(alert), self._host)
        delivery = self._delivery
        problem = ""
        for attempt in range(1, delivery.attempts + 1):
            problem, wait = await self._post(message, delivery.backoff * 2 ** (attempt - 1))
            if not problem:
                log.debug("Slack alert sent", extra={"alert": alert.kind, "attempts": attempt})
                self._emit(AlertSent("slack", alert.kind, "sent"))
                return
            if wait is None:
                log.error("Slack refused an alert (%s); dropped: %s", problem, message.text,
                          extra={"alert": alert.kind})
                break
            if attempt < delivery.attempts:
                log.warning("Slack alert attempt %d of %d failed (%s); next in %.1fs", attempt, delivery.attempts,
                            problem, wait, extra={"alert": alert.kind})
                await asyncio.sleep(wait)
        else:
            log.error("Slack alert dropped after %d attempts (%s): %s", delivery.attempts, problem, message.text,
                      extra={"alert": alert.kind})
        self._emit(AlertSent("slack", alert.kind, "failed"))

    async def _post(self, message: Message, backoff: float) -> tuple[str, float | None]:
        """One call: ``("", None)`` when Slack took it, else what went wrong and how long to wait
        before the next try (None: no retry can help)."""
        assert self._client is not None
        try:
            async with asyncio.timeout(self._delivery.call_timeout):
                await self._client.chat_postMessage(channel=self.settings.channel, text=message.text,
                                                    blocks=message.blocks, unfurl_links=False, unfurl_media=False)
        except SlackApiError as error:
            problem, retry_after = _refusal(error.response)
            if retry_after is not None:
                return problem, min(retry_after, self._delivery.max_retry_after)
            return problem, None if _error_code(error.response) in PERMANENT_ERRORS else backoff
        except TimeoutError:
            return f"no answer within {self._delivery.call_timeout:g}s", backoff
        except Exception as error:  # connection refused or reset, a body that is not JSON...
            return _describe(error), backoff
        return "", None


def _error_code(response: Any) -> str:
    data = getattr(response, "data", None)
    return str(data.get("error") or "") if isinstance(data, Mapping) else ""


def _refusal(response: Any) -> tuple[str, float | None]:
    """What Slack's answer says, and its Retry-After in seconds when it was rate limited."""
    status, code = getattr(response, "status_code", 0), _error_code(response)
    problem = f"HTTP {status}" + (f" {code}" if code else "")
    if status == 429 or code == "ratelimited":
        headers = getattr(response, "headers", None) or {}
        seconds = parse_retry_after(headers.get("Retry-After"), time.time())
        return problem, seconds if seconds is not None else 1.0  # inf: capped by max_retry_after
    return problem, None


def _describe(error: BaseException) -> str:
    """An exception in a few words; aiohttp's messages name the host, never a header or the token."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__
