"""Inbound webhooks as config reads them: frozen values with their defaults.

A policy file's ``webhooks:`` section (next to ``upstreams:``) declares, per name, where the
provider calls in (``path`` on the webhooks listener), how its request is verified, how it is
deduplicated, and where and how it is delivered. The listener (:mod:`proxy.web.webhooks`), the
pure checks (:mod:`proxy.policy.webhook_auth`, :mod:`proxy.policy.webhook_keys`) and the store
(:mod:`proxy.state.webhooks`) read these values; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PROVIDERS = ("twilio", "google", "hmac", "none")
MODES = ("queue", "sync")
ON_BACKEND_ERROR = ("passthrough", "reject")
HMAC_ENCODINGS = ("hex", "base64")
KEY_SOURCES = ("header", "form", "json")

Provider = Literal["twilio", "google", "hmac", "none"]
KeySource = Literal["header", "form", "json"]


@dataclass(frozen=True)
class KeyPart:
    """One value taken from a provider's request: ``header:X``, ``form:F`` or ``json:a.b``."""

    source: KeySource
    name: str
    """A header name, a form field, or a dotted path into a JSON object (``data.id``)."""

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class TwilioAuth:
    """``twilio:``: Twilio signs ``public_url`` (plus the request's query) with the account's auth token."""

    auth_token: str = field(repr=False)
    public_url: str
    """The URL configured in the Twilio console, exactly as Twilio calls it (the Host header is never used)."""


@dataclass(frozen=True)
class GoogleAuth:
    """``google:``: the token given to ``watch``, returned in ``X-Goog-Channel-Token`` on every push."""

    channel_token: str = field(repr=False)


@dataclass(frozen=True)
class HmacAuth:
    """``hmac:``: HMAC-SHA256 of the raw body with ``secret`` in ``header`` (GitHub / Stripe style)."""

    secret: str = field(repr=False)
    header: str
    encoding: Literal["hex", "base64"] | None = None
    """None accepts either (a hex digest is 64 characters, base64 44: they cannot be confused)."""


@dataclass(frozen=True)
class Dedupe:
    window: float = 24 * 3600.0
    """A repeat within this many seconds is answered like the original and not queued again; the
    payload is kept as long."""
    key: tuple[KeyPart, ...] = ()
    """Empty: the provider's default key (see :mod:`proxy.policy.webhook_keys`)."""


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    multiplier: float = 2.0
    max: float = 300.0


@dataclass(frozen=True)
class Delivery:
    attempts: int = 8
    """Tries in all, the first included; after the last failed one the event is a dead letter."""
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float = 10.0
    """Per attempt, until the app's whole answer has arrived."""
    concurrency: int = 4
    """Deliveries in flight per webhook per replica."""


@dataclass(frozen=True)
class Retention:
    delivery_log: float = 7 * 24 * 3600.0


DEFAULT_MAX_BODY = 2**20


@dataclass(frozen=True)
class Webhook:
    """One inbound webhook: ``webhooks.<name>`` in a policy file."""

    name: str
    path: str
    """Exact path on the webhooks listener, e.g. ``/hooks/twilio/status``."""
    deliver_to: str
    """The app's http(s) URL the event is delivered to."""
    provider: Provider
    twilio: TwilioAuth | None = None
    google: GoogleAuth | None = None
    hmac: HmacAuth | None = None
    mode: Literal["queue", "sync"] = "queue"
    dedupe: Dedupe = field(default_factory=Dedupe)
    delivery: Delivery = field(default_factory=Delivery)
    retention: Retention = field(default_factory=Retention)
    org: KeyPart | None = None
    """Where the event's organisation is read from, stored with it for the log and the admin API."""
    on_backend_error: Literal["passthrough", "reject"] = "passthrough"
    """When the store cannot answer: forward synchronously (the app's answer goes back) or 503."""
    max_body: int = DEFAULT_MAX_BODY
    source: str = ""
    """The policy file it was read from."""
