"""Sentry reports through a running sidecar and a real sentry-sdk, delivered to a loopback fake
Sentry whose decompressed envelopes are searched byte by byte for anything personal or secret."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config.model import SentrySettings
from proxy.events import BreakerTransition, CircuitRejected, RequestEnded
from proxy.observe.sentry import ReportLimit, SentryReporter
from tests.conftest import StartSidecar, base_url, free_port
from tests.observe.fake_sentry import FakeSentry
from tests.observe.sentry_fixtures import fake_sentry_fixture, flush, no_sentry_leak_fixture  # noqa: F401

ACCOUNT = "ACd2b1c0ffee5a4e0f9a7b3c6d8e1f2a43"
AUTH_TOKEN = "f1e2d3c4b5a697887766554433221100"
MESSAGES = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
API_KEY = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
OAUTH = "ya29.a0AfB_byC1xyz-Secret_Token.value"
SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
BASIC = base64.b64encode(f"{ACCOUNT}:{AUTH_TOKEN}".encode()).decode()
FORM = {"To": "+15551234567", "From": "whatsapp:+15557654321", "Body": "Your code is 731905"}
FAST = {"initial": "10ms", "multiplier": 1, "max": "10ms", "jitter": 0}

SECRETS = ["+15551234567", "15551234567", "5551234567", "15557654321", "5557654321", "Your code", "Your+code",
           "731905", AUTH_TOKEN, BASIC, SIGNATURE, API_KEY, "AIzaSy", OAUTH, "ya29.", "@example.com",
           "%40example.com", "Dentist", "Bob Jones", "root canal"]


def assert_no_secrets(raw: bytes) -> None:
    leaked = [secret for secret in SECRETS if secret.encode() in raw]
    assert not leaked, f"{leaked} reached Sentry"


def twilio(url: str, **route: Any) -> dict[str, Any]:
    return {"twilio": {
        "url": url, "prefix": "/twilio", "timeout": "300ms", "connect_timeout": "300ms",
        "breaker": {"consecutive_failures": 3, "open_for": "30s"},
        "retry": {"attempts": 2, "backoff": FAST},
        "routes": [{"name": "twilio_sms", "methods": ["POST"], "path": "/2010-04-01/Accounts/{account}/Messages.json",
                    **route},
                   {"name": "fetch", "methods": ["GET"], "path": "/2010-04-01/Accounts/{account}/Messages/{sid}.json",
                    "breaker": False}],
    }}


def sentry(fake: FakeSentry) -> dict[str, Any]:
    return {"errors": {"sentry": {"dsn": fake.dsn, "environment": "test", "release": "rp@test"}}}


async def send_sms(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Basic {BASIC}", "X-Twilio-Signature": SIGNATURE,
               "X-Request-Id": "d2b1c0ffee5a4e0f9a7b3c6d8e1f2a43"}
    async with http.post(f"{url}/twilio{MESSAGES}?key={API_KEY}&access_token={OAUTH}", data=FORM,
                         headers=headers) as response:
        await response.read()
        return response


async def test_a_final_failure_is_one_scrubbed_event_grouped_by_upstream_route_and_kind(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, fake_sentry: FakeSentry
) -> None:
    sidecar = await start_sidecar(twilio(f"http://127.0.0.1:{free_port()}"), **sentry(fake_sentry))
    response = await send_sms(http, base_url(sidecar))
    assert response.status == 502
    await flush()

    [event] = fake_sentry.events
    assert event["message"] == "twilio/twilio_sms: connection_refused after 3 attempts"
    assert event["level"] == "error"
    assert event["fingerprint"] == ["upstream-failure", "twilio", "twilio_sms", "connection_refused"]
    assert event["tags"] == {"upstream": "twilio", "route": "twilio_sms", "error": "connection_refused",
                             "attempts": "3", "status": "502", "method": "POST",
                             "request_id": "d2b1c0ffee5a4e0f9a7b3c6d8e1f2a43"}
    assert (event["environment"], event["release"]) == ("test", "rp@test")
    crumbs = [c["message"] for c in event["breadcrumbs"]["values"] if c.get("category") == "breaker"]
    assert crumbs == ["breaker twilio/twilio_sms open: 3 consecutive failures"]
    assert "request" not in event and "user" not in event
    assert_no_secrets(fake_sentry.raw)

    # The breaker is open now: the fast-fail 503 is the sidecar doing its job, not an event.
    response = await send_sms(http, base_url(sidecar))
    assert response.status == 503
    await flush()
    assert len(fake_sentry.events) == 1


async def test_two_timeouts_on_one_route_share_a_fingerprint(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, fake_sentry: FakeSentry, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.delay = 2.0
    sidecar = await start_sidecar(twilio(url), **sentry(fake_sentry))
    for sid in ("SM00000000000000000000000000000001", "SM00000000000000000000000000000002"):
        async with http.get(f"{base_url(sidecar)}/twilio/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json") as r:
            assert r.status == 504
    await flush()
    first, second = fake_sentry.events
    assert first["fingerprint"] == second["fingerprint"] == [
        "upstream-failure", "twilio", "fetch", "http_response_timeout"]
    assert first["message"] == "twilio/fetch: http_response_timeout after 3 attempts"
    assert first["tags"]["request_id"] != second["tags"]["request_id"]


async def test_an_unexpected_exception_in_the_sidecar_is_reported_scrubbed(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, fake_sentry: FakeSentry,
    monkeypatch: pytest.MonkeyPatch, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(twilio(url), **sentry(fake_sentry))

    async def broken(request: web.BaseRequest, *args: Any) -> web.StreamResponse:
        body = await request.read()
        raise ValueError(f"{request.headers['Authorization']} sent {request.path_qs} with {body.decode()}")

    monkeypatch.setattr(sidecar.dataplane, "_proxy", broken)
    response = await send_sms(http, base_url(sidecar))
    assert response.status == 500
    await flush()

    [event] = fake_sentry.events
    assert event["logentry"]["message"] == "unexpected error while proxying"
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["value"] == (f"Basic [redacted] sent /twilio{MESSAGES}?key=[redacted]&access_token=[redacted] "
                                  "with To=[phone]&From=whatsapp%3A[phone]&Body=[redacted]")  # the SID stays
    assert event["extra"]["request_id"] == "d2b1c0ffee5a4e0f9a7b3c6d8e1f2a43"
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    assert_no_secrets(fake_sentry.raw)


CALENDAR_EVENT = {
    "summary": "Dentist: root canal",
    "description": "Call +1 (555) 123-4567 if late",
    "start": {"dateTime": "2025-03-01T10:00:00+01:00"},
    "attendees": [{"email": "bob.jones@example.com", "displayName": "Bob Jones", "responseStatus": "accepted"},
                  {"email": "team%20cal%40example.com", "self": True}],
    "organizer": {"email": "ops@example.com"},
}


async def test_breadcrumbs_and_extras_with_calendar_and_twilio_payloads_are_scrubbed(
    fake_sentry: FakeSentry
) -> None:
    reporter = SentryReporter(SentrySettings(dsn=fake_sentry.dsn))
    await reporter.start()
    try:
        app_log = logging.getLogger("resilience_proxy.test")
        app_log.warning("inserting event for bob.jones@example.com", extra={"event": CALENDAR_EVENT})
        app_log.warning("twilio said %s", {"code": 21211, "message": "The 'To' number +15551234567 is not valid",
                                            "Body": "Your code is 731905"})
        try:
            raise RuntimeError(f"POST ...?key={API_KEY} failed with Authorization Bearer {OAUTH}")
        except RuntimeError:
            app_log.exception("calendar insert failed", extra={
                "calendar": CALENDAR_EVENT, "headers": {"authorization": f"Bearer {OAUTH}", "X-Goog-Api-Key": API_KEY,
                                                        "Cookie": "sid=abc", "x-twilio-signature": SIGNATURE},
                "query": f"key={API_KEY}&alt=json", "token": AUTH_TOKEN})
        await flush()
    finally:
        await reporter.close()

    [event] = fake_sentry.events
    extra = event["extra"]
    assert extra["calendar"]["summary"] == "[redacted]"
    assert extra["calendar"]["attendees"][0] == {"email": "[redacted]", "displayName": "[redacted]",
                                                 "responseStatus": "accepted"}
    assert extra["calendar"]["start"] == {"dateTime": "2025-03-01T10:00:00+01:00"}
    assert extra["headers"] == {"authorization": "[redacted]", "X-Goog-Api-Key": "[redacted]",
                                "Cookie": "[redacted]", "x-twilio-signature": "[redacted]"}
    assert extra["query"] == "key=[redacted]&alt=json"
    messages = [crumb.get("message") for crumb in event["breadcrumbs"]["values"]]
    assert "inserting event for [email]" in messages
    assert_no_secrets(fake_sentry.raw)


async def test_only_upstream_failures_become_events(fake_sentry: FakeSentry) -> None:
    reporter = SentryReporter(SentrySettings(dsn=fake_sentry.dsn))
    await reporter.start()
    try:
        for status, error in ((429, "http_request_denied"), (400, "http_request_denied"), (413, "http_request_error"),
                              (503, "destination_unavailable"), (404, "destination_not_found"),
                              (499, "client_disconnected"), (200, "connection_read_timeout"), (503, None)):
            reporter.on_event(RequestEnded("r1", "twilio", "twilio_sms", "POST", status, 0.01, 1, error))
        reporter.on_event(RequestEnded("r2", None, None, "GET", 502, 0.01, 0, "connection_refused"))
        reporter.on_event(CircuitRejected("twilio", "twilio_sms"))
        reporter.on_event(BreakerTransition("twilio/twilio_sms", "closed", "open", "3 consecutive failures", 0.0))
        logging.getLogger("resilience_proxy").error("state backend down")  # no exception: a breadcrumb only
        reporter.on_event(RequestEnded("r3", "google", "freebusy", "POST", 504, 10.0, 1, "http_response_timeout"))
        await flush()
    finally:
        await reporter.close()
    [event] = fake_sentry.events
    assert event["message"] == "google/freebusy: http_response_timeout after 1 attempt"
    crumbs = [(c.get("category"), c.get("message")) for c in event["breadcrumbs"]["values"]]
    assert ("breaker", "breaker twilio/twilio_sms open: 3 consecutive failures") in crumbs
    assert ("resilience_proxy", "state backend down") in crumbs


async def test_reports_per_fingerprint_are_limited_and_the_rest_counted(fake_sentry: FakeSentry) -> None:
    now = [0.0]
    reporter = SentryReporter(SentrySettings(dsn=fake_sentry.dsn), limit=ReportLimit(2, 60.0, lambda: now[0]))
    await reporter.start()
    try:
        for _ in range(5):
            reporter.on_event(RequestEnded("r", "twilio", "twilio_sms", "POST", 502, 0.01, 3, "connection_refused"))
        reporter.on_event(RequestEnded("r", "twilio", "fetch", "GET", 502, 0.01, 3, "connection_refused"))
        now[0] = 60.0
        reporter.on_event(RequestEnded("r", "twilio", "twilio_sms", "POST", 502, 0.01, 3, "connection_refused"))
        await flush()
    finally:
        await reporter.close()
    left_out = [(e["tags"]["route"], e["extra"]["left_out_since_last_report"]) for e in fake_sentry.events]
    assert left_out == [("twilio_sms", 0), ("twilio_sms", 0), ("fetch", 0), ("twilio_sms", 3)]


def test_report_limit_windows() -> None:
    now = [0.0]
    limit = ReportLimit(burst=1, window=10.0, clock=lambda: now[0])
    assert [limit.admit(("a",)), limit.admit(("a",)), limit.admit(("b",)), limit.admit(("a",))] == [0, None, 0, None]
    now[0] = 9.9
    assert limit.admit(("a",)) is None
    now[0] = 10.0
    assert limit.admit(("a",)) == 3


def test_without_a_dsn_nothing_loads_sentry() -> None:
    """The reporter module loads no sentry-sdk: the SDK is imported only when a DSN is configured (and the sidecar
    imports this module only then, tests/runtime/test_startup_imports.py)."""
    code = ("import sys, proxy.runtime.sidecar, proxy.observe.sentry; "
            "print('sentry_sdk' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


async def test_a_closed_reporter_leaves_no_client_behind(fake_sentry: FakeSentry) -> None:
    import sentry_sdk

    reporter = SentryReporter(SentrySettings(dsn=fake_sentry.dsn))
    await reporter.start()
    assert sentry_sdk.get_client().is_active()
    await reporter.close()
    assert not sentry_sdk.get_client().is_active()
    reporter.on_event(RequestEnded("r", "twilio", "twilio_sms", "POST", 502, 0.01, 3, "connection_refused"))
    await reporter.close()  # twice is harmless
    assert fake_sentry.envelopes == []
