"""Nothing an inbound webhook carries reaches Sentry: bodies (phone numbers, message texts, names),
signatures and channel tokens, whether logged as an event value, its repr, or header pairs."""

from __future__ import annotations

import json
import logging

from proxy.config.model import SentrySettings
from proxy.events import WebhookSettled
from proxy.observe.scrub import scrub_text, scrub_value
from proxy.observe.sentry import SentryReporter
from proxy.state.webhooks import InboundEvent
from tests.observe.fake_sentry import FakeSentry
from tests.observe.sentry_fixtures import fake_sentry_fixture, flush, no_sentry_leak_fixture  # noqa: F401

SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
CHANNEL_TOKEN = "calendar-channel-3f9a"
HUB = "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
FORM = b"MessageSid=SM0123&From=whatsapp%3A%2B15557654321&To=%2B15551234567&Body=Your+code+is+731905&ProfileName=Bob+Jones"
JSON_BODY = json.dumps({"customer": {"name": "Jane Roe", "phone": "+15559876543"}, "note": "gate code 4417"}).encode()
SECRETS = ["15557654321", "15551234567", "5551234567", "Your+code", "731905", "Bob+Jones", "Bob Jones", SIGNATURE,
           CHANNEL_TOKEN, HUB, "9f86d0818", "Jane Roe", "15559876543", "gate code", "4417"]


def event(body: bytes, *headers: tuple[str, str]) -> InboundEvent:
    return InboundEvent(webhook="twilio_inbound", dedupe_key="SM0123|received|", method="POST", query="",
                        headers=headers, body=body, received_at=1.0, org="AC1", event_type="received",
                        verified="twilio")


TWILIO = event(FORM, ("X-Twilio-Signature", SIGNATURE), ("Content-Type", "application/x-www-form-urlencoded"))
OTHER = event(JSON_BODY, ("X-Goog-Channel-Token", CHANNEL_TOKEN), ("X-Hub-Signature-256", HUB),
              ("X-Acme-Signature", HUB))


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_an_event_value_loses_its_body_and_secret_headers_and_keeps_its_ids() -> None:
    scrubbed = scrub_value(TWILIO)
    assert scrubbed["body"] == "[redacted]"
    assert scrubbed["headers"] == [["X-Twilio-Signature", "[redacted]"],
                                   ["Content-Type", "application/x-www-form-urlencoded"]]
    assert (scrubbed["webhook"], scrubbed["org"], scrubbed["event_type"]) == ("twilio_inbound", "AC1", "received")
    assert leaked(json.dumps(scrub_value(OTHER))) == []


def test_an_events_repr_in_a_log_line_loses_its_body_and_secret_headers() -> None:
    for value in (TWILIO, OTHER):
        text = scrub_text(f"delivery failed: {value!r}")
        assert leaked(text) == [], text
        assert "body=[redacted]" in text and "webhook='twilio_inbound'" in text


def test_form_fields_and_header_maps_of_a_webhook_are_scrubbed() -> None:
    fields = {"From": "whatsapp:+15557654321", "Body": "Your code is 731905", "ProfileName": "Bob Jones",
              "MessageSid": "SM0123"}
    headers = {"X-Goog-Channel-Token": CHANNEL_TOKEN, "Stripe-Signature": HUB, "X-Acme-Signature": HUB,
               "X-Goog-Resource-State": "exists"}
    assert leaked(json.dumps(scrub_value({"fields": fields, "headers": headers}))) == []
    assert scrub_value(fields)["MessageSid"] == "SM0123"
    assert scrub_value(headers)["X-Goog-Resource-State"] == "exists"


async def test_sentry_never_sees_a_webhook_payload(fake_sentry: FakeSentry) -> None:
    reporter = SentryReporter(SentrySettings(dsn=fake_sentry.dsn))
    await reporter.start()
    try:
        reporter.on_event(WebhookSettled("twilio_inbound", "dead_letter", 8, 3600.0))
        hooks_log = logging.getLogger("resilience_proxy.webhooks")
        hooks_log.warning("retrying %r", TWILIO)
        try:
            raise RuntimeError(f"app refused {OTHER!r}")
        except RuntimeError:
            hooks_log.exception("delivery failed", extra={"event": TWILIO, "other": OTHER, "form": FORM.decode(),
                                                          "headers": dict(OTHER.headers)})
        await flush()
    finally:
        await reporter.close()

    [report] = fake_sentry.events
    assert report["extra"]["headers"]["X-Goog-Channel-Token"] == "[redacted]"
    crumbs = {c.get("category"): c for c in report["breadcrumbs"]["values"]}
    assert crumbs["webhook"]["message"] == "webhook twilio_inbound event moved to dead letter after 8 attempt(s)"
    raw = fake_sentry.raw.decode("utf-8", "replace")
    assert leaked(raw) == [], leaked(raw)
    assert "twilio_inbound" in raw  # the report still says which webhook
