"""What identifies a provider's event: its dedupe key, its organisation and its event type.

Dedupe keys, when ``dedupe.key`` is not configured (the provider's own idea of "the same event"):

- **twilio**: ``I-Twilio-Idempotency-Token`` (the same on Twilio's retries) when present, else
  ``MessageSid``/``CallSid`` + the status + ``ErrorCode`` (one callback per status change);
- **google**: ``X-Goog-Channel-ID`` + ``X-Goog-Message-Number`` (one number per notification);
- **hmac**, **none**: the raw body.

A configured list joins the listed values; when every one is absent the raw body decides. Keys are
SHA-256 hex digests: of bounded length whatever the request, and never a value in clear (a phone
number can sit in a form field).
"""

from __future__ import annotations

import hashlib

from proxy.config.webhooks import Webhook
from proxy.policy.webhook_request import InboundRequest

TWILIO_IDEMPOTENCY = "I-Twilio-Idempotency-Token"
GOOGLE_CHANNEL = "X-Goog-Channel-ID"
GOOGLE_NUMBER = "X-Goog-Message-Number"
GOOGLE_STATE = "X-Goog-Resource-State"
_TWILIO_STATUS = ("MessageStatus", "SmsStatus", "CallStatus")
_SEPARATOR = "\x1f"
MAX_LABEL = 64
"""Org and event type are stored with every log entry: long values are cut."""


def dedupe_key(webhook: Webhook, request: InboundRequest) -> str:
    if webhook.dedupe.key:
        values = [request.value_of(part) for part in webhook.dedupe.key]
        if any(values):
            return _digest("key", *values)
    elif webhook.provider == "twilio":
        token = request.header(TWILIO_IDEMPOTENCY)
        if token:
            return _digest("twilio-token", token)
        sid = request.form_value("MessageSid") or request.form_value("CallSid")
        if sid:
            return _digest("twilio", sid, _twilio_status(request), request.form_value("ErrorCode"))
    elif webhook.provider == "google":
        channel, number = request.header(GOOGLE_CHANNEL), request.header(GOOGLE_NUMBER)
        if channel and number:
            return _digest("google", channel, number)
    return hashlib.sha256(b"body" + _SEPARATOR.encode() + request.body).hexdigest()


def forward_id(webhook: Webhook, dedupe_key: str) -> str:
    """The ``X-Webhook-Id`` of an event forwarded before the store has seen it (``mode: sync``, passthrough):
    derived from the dedupe key, so a provider's retry reaches the app with the id of the first try."""
    return _digest("id", webhook.name, dedupe_key)[:32]


def event_type(webhook: Webhook, request: InboundRequest) -> str:
    """Twilio's status (MessageStatus, SmsStatus, CallStatus), Google's X-Goog-Resource-State, else ''."""
    if webhook.provider == "twilio":
        return _twilio_status(request)[:MAX_LABEL]
    if webhook.provider == "google":
        return request.header(GOOGLE_STATE)[:MAX_LABEL]
    return ""


def org(webhook: Webhook, request: InboundRequest) -> str:
    """The ``org`` value of the request; '' when not configured or absent."""
    return request.value_of(webhook.org)[:MAX_LABEL] if webhook.org is not None else ""


def _twilio_status(request: InboundRequest) -> str:
    return next((value for value in map(request.form_value, _TWILIO_STATUS) if value), "")


def _digest(kind: str, *values: str) -> str:
    return hashlib.sha256(_SEPARATOR.join((kind, *values)).encode("utf-8", "surrogateescape")).hexdigest()
