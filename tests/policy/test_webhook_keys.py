"""Dedupe keys, org and event type: the provider's defaults and configured lists."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from proxy.config.webhooks import Dedupe, GoogleAuth, HmacAuth, KeyPart, TwilioAuth, Webhook
from proxy.policy.webhook_keys import dedupe_key, event_type, org
from proxy.policy.webhook_request import FORM, InboundRequest

TWILIO = Webhook("s", "/s", "http://127.0.0.1/s", "twilio", twilio=TwilioAuth("t", "https://a.example/s"),
                 org=KeyPart("form", "AccountSid"))
GOOGLE = Webhook("g", "/g", "http://127.0.0.1/g", "google", google=GoogleAuth("t"))
HMAC = Webhook("h", "/h", "http://127.0.0.1/h", "hmac", hmac=HmacAuth("s", "X-Sig"), org=KeyPart("json", "org.id"))


def form(headers: dict[str, str] | None = None, **fields: str) -> InboundRequest:
    return InboundRequest("POST", "", {"content-type": FORM, **(headers or {})}, urlencode(fields).encode())


def test_twilio_retries_share_the_idempotency_token() -> None:
    first = form({"i-twilio-idempotency-token": "tok-1"}, MessageSid="SM1", MessageStatus="sent")
    retry = form({"i-twilio-idempotency-token": "tok-1"}, MessageSid="SM1", MessageStatus="sent", Extra="x")
    other = form({"i-twilio-idempotency-token": "tok-2"}, MessageSid="SM1", MessageStatus="sent")
    assert dedupe_key(TWILIO, first) == dedupe_key(TWILIO, retry) != dedupe_key(TWILIO, other)


def test_without_a_token_twilio_events_are_sid_status_and_error_code() -> None:
    sent = form(MessageSid="SM1", MessageStatus="sent", To="+15005550006")
    assert dedupe_key(TWILIO, sent) == dedupe_key(TWILIO, form(MessageSid="SM1", MessageStatus="sent", To="+1999"))
    keys = {dedupe_key(TWILIO, r) for r in (
        sent, form(MessageSid="SM1", MessageStatus="delivered"), form(MessageSid="SM2", MessageStatus="sent"),
        form(MessageSid="SM1", MessageStatus="sent", ErrorCode="30003"), form(CallSid="SM1", CallStatus="sent"))}
    assert len(keys) == 4  # CallSid/CallStatus SM1/sent is the same event as MessageSid/MessageStatus SM1/sent
    assert "+1500" not in dedupe_key(TWILIO, sent) and len(dedupe_key(TWILIO, sent)) == 64


def test_google_events_are_channel_and_message_number() -> None:
    def push(channel: str, number: str, state: str = "exists") -> InboundRequest:
        return InboundRequest("POST", "", {"x-goog-channel-id": channel, "x-goog-message-number": number,
                                           "x-goog-resource-state": state}, b"")

    assert dedupe_key(GOOGLE, push("c1", "5")) == dedupe_key(GOOGLE, push("c1", "5", "sync"))
    assert len({dedupe_key(GOOGLE, r) for r in (push("c1", "5"), push("c1", "6"), push("c2", "5"))}) == 3
    assert event_type(GOOGLE, push("c1", "1", "sync")) == "sync"


def test_other_providers_dedupe_on_the_raw_body() -> None:
    def body(text: bytes) -> InboundRequest:
        return InboundRequest("POST", "", {"content-type": "application/json"}, text)

    one, same, other = (dedupe_key(HMAC, body(text)) for text in (b'{"a":1}', b'{"a":1}', b'{"a":2}'))
    assert one == same != other


def test_a_configured_key_list_joins_its_values_and_falls_back_to_the_body() -> None:
    hook = Webhook("h", "/h", "http://127.0.0.1/h", "none",
                   dedupe=Dedupe(60.0, (KeyPart("header", "X-Event-Id"), KeyPart("json", "data.id"))))

    def event(event_id: str, data_id: object, extra: int = 0) -> InboundRequest:
        headers = {"content-type": "application/json", **({"x-event-id": event_id} if event_id else {})}
        return InboundRequest("POST", "", headers, json.dumps({"data": {"id": data_id}, "extra": extra}).encode())

    assert dedupe_key(hook, event("e1", 7)) == dedupe_key(hook, event("e1", 7, extra=1))
    assert dedupe_key(hook, event("e1", 7)) != dedupe_key(hook, event("e1", 8))
    assert dedupe_key(hook, event("", None)) != dedupe_key(hook, event("", None, extra=1))


def test_org_and_event_type_are_read_from_where_configured() -> None:
    status = form(AccountSid="AC1", SmsStatus="delivered", MessageStatus="delivered")
    assert (org(TWILIO, status), event_type(TWILIO, status)) == ("AC1", "delivered")
    assert event_type(TWILIO, form(CallSid="CA1", CallStatus="completed")) == "completed"
    assert (org(TWILIO, form()), event_type(TWILIO, form())) == ("", "")
    payload = InboundRequest("POST", "", {"content-type": "application/json"}, b'{"org": {"id": 42}}')
    assert (org(HMAC, payload), event_type(HMAC, payload)) == ("42", "")
    assert org(HMAC, InboundRequest("POST", "", {"content-type": "application/json"}, b"not json")) == ""
    assert org(GOOGLE, payload) == ""
    assert org(TWILIO, form(AccountSid="A" * 500)) == "A" * 64
