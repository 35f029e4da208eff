"""Remove personal data and secrets from anything about to leave the process (Sentry, log lines).

Pure functions over strings, dicts and lists; no Sentry import, so that the log formatter and the
Sentry hooks share one definition of "sensitive" and tests need no SDK.

What goes, and why:

- phone numbers in E.164 (``+15551234567``, ``+1 555-123-4567``, ``whatsapp:+1...``, percent-encoded
  ``%2B1555...``) and e-mail addresses (also ``%40``-encoded calendar ids): they identify end users;
- credentials: ``Authorization``/``Cookie``/``Set-Cookie``/``X-Twilio-Signature`` values (any case),
  ``Basic``/``Bearer`` credentials in text, Google OAuth tokens (``ya29.``), Google API keys
  (``AIza...``), Slack tokens, secret query parameters (``key=``, ``access_token=``, ``token=``,
  ``api_key=``, ``sig=``, ``signature=``), and 32-character tokens (a Twilio auth token is 32 hex, an
  API key secret 32 alphanumerics);
- message content: Twilio ``Body``, Calendar ``summary``/``description``/``location``, attendees'
  ``email``/``displayName``, wherever they sit in nested data;
- what an inbound webhook carries: an event value's raw ``body`` (walked by field name, or its repr's
  ``body=b'...'``), Twilio's ``ProfileName``, and header pairs named like a secret (``X-Goog-Channel-Token``,
  ``X-Hub-Signature-256``, ``Stripe-Signature``, any configured ``X-...-Signature``).

What stays: Twilio SIDs (``AC``/``SM`` + 32 hex, 34 characters: identifiers, not secrets, and needed to
debug), upstream and route names, error types, and ids this process generated (``request_id``,
Sentry's ``event_id``/``trace_id``), whose 32-hex shape would otherwise look like a token.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

REDACTED = "[redacted]"

_SECRET_PARAMS = r"key|api[_-]?key|access_token|refresh_token|id_token|token|sig|signature|client_secret|password"
_JSON_FIELDS = (r"body|summary|description|location|email|displayName|access_token|refresh_token|id_token|token"
                r"|password|client_secret")


def _param(match: re.Match[str]) -> str:
    return match.group(0).split("=", 1)[0] + "=" + REDACTED


def _field(match: re.Match[str]) -> str:
    return match.group(0).split(":", 1)[0] + f': "{REDACTED}"'


def _credential(match: re.Match[str]) -> str:
    return match.group(0).split(None, 1)[0] + " " + REDACTED


# (triggers, pattern, replacement), applied in order. A pattern runs only when one of its triggers
# occurs in the lower-cased text: a plain log message costs a few substring tests, not eight scans.
_RULES: list[tuple[tuple[str, ...], re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # The repr of an inbound webhook event (a log line's ``%r`` or Sentry's repr of an ``extra``): its raw
    # body goes whole, and a (name, value) pair whose name says secret keeps only its name.
    (("body=b",), re.compile(r"""(?i)\bbody=b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""), f"body={REDACTED}"),
    (("signature", "token", "secret", "authorization"),
     re.compile(r"""(?i)(['"])([\w-]*(?:signature|token|secret|authorization)[\w-]*)\1,\s*(['"])(?:(?!\3).)*\3"""),
     lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}, '{REDACTED}'"),
    # Parameters, JSON fields and credentials keep their name, so the text still says one was there.
    # A Twilio Body runs to the next "&" even when its spaces were not encoded.
    (("=",), re.compile(rf"(?i)(?<![A-Za-z0-9])(?:(?:{_SECRET_PARAMS})=[^&#\s\"',;]*|(?:body|profilename)=(?!\[redacted\])[^&#\"'\r\n]*)"),
     _param),
    # JSON, and Python's repr of a dict (a dict logged with %s): single or double quotes.
    (('"', "'"), re.compile(rf"""(?i)(["'])(?:{_JSON_FIELDS})\1\s*:\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""),
     _field),
    (("basic", "bearer"), re.compile(r"(?i)\b(?:Basic|Bearer)\s+[A-Za-z0-9._~+/=-]{6,}"), _credential),
    (("ya29.", "1//0", "aiza"), re.compile(r"\bya29\.[0-9A-Za-z_.-]+|\b1//0[0-9A-Za-z_-]{10,}|\bAIza[0-9A-Za-z_-]{35}"),
     "[token]"),
    (("xox",), re.compile(r"\bxox[abposr]-[0-9A-Za-z-]+"), "[token]"),
    # Bounded repeats (RFC 5321 lengths) keep the scan linear on long runs without an "@".
    (("@", "%40"), re.compile(r"[A-Za-z0-9._%+-]{1,64}(?:@|%40)(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}\b"),
     "[email]"),
    # E.164 has at most 15 digits; Twilio shows them with spaces, dashes or brackets between groups.
    (("+", "%2b"), re.compile(r"(?:\+|%2[Bb])\d(?:[ ().-]{0,2}\d){7,14}(?!\d)"), "[phone]"),
]
_TOKEN = re.compile(r"\b[0-9A-Za-z]{32}\b")
# Every rule's match holds one of these characters or words; most strings (names, error types,
# timestamps) hold none and skip the rules.
_SUSPECT_CHARS = re.compile(r"[=\"'@+%]")
_SUSPECT_WORDS = ("basic", "bearer", "ya29.", "1//0", "aiza", "xox", "signature", "token", "secret", "authorization")

_SECRET_KEYS = frozenset({
    "authorization", "proxy-authorization", "cookie", "cookies", "set-cookie", "x-twilio-signature",
    "x-goog-api-key", "x-api-key", "api-key", "apikey", "access-token", "refresh-token", "id-token", "auth-token",
    "client-secret", "password", "secret", "token", "signature",
    # inbound webhooks: Google's channel token; GitHub / Stripe style HMAC signatures
    "x-goog-channel-token", "x-hub-signature", "x-hub-signature-256", "stripe-signature",
})
# Any configured hmac header (X-Acme-Signature), X-...-Token, X-...-Secret.
_SECRET_SUFFIXES = ("-signature", "-signature-256", "-token", "-secret")
# Twilio webhook form fields: Body (the message), ProfileName (a WhatsApp sender's name); a webhook's payload.
_CONTENT_KEYS = frozenset({"body", "summary", "description", "location", "email", "displayname", "profilename",
                           "payload"})
_OWN_IDS = frozenset({"request-id", "event-id", "trace-id", "span-id", "parent-span-id", "x-request-id"})


def scrub_text(text: str, *, own_id: bool = False) -> str:
    """``text`` with phone numbers, e-mails, tokens and secret parameters masked.

    ``own_id``: the text is an id this process made (a request id), so a 32-character run in it is
    not taken for a token; phone numbers and e-mails are still masked (a client chooses X-Request-Id).
    """
    if len(text) < 8:
        return text
    lower = text.lower()
    if _SUSPECT_CHARS.search(text) or any(word in lower for word in _SUSPECT_WORDS):
        for triggers, pattern, replacement in _RULES:
            if any(trigger in lower for trigger in triggers):
                text = pattern.sub(replacement, text)
    return text if own_id or len(text) < 32 else _TOKEN.sub("[token]", text)


@lru_cache(maxsize=4096)
def normal_key(key: object) -> str:
    """``X_Twilio_Signature``, ``HTTP_X_TWILIO_SIGNATURE`` and ``x-twilio-signature`` as one name."""
    name = str(key).lower().replace("_", "-")
    return name[5:] if name.startswith("http-") else name


def is_sensitive_key(key: object) -> bool:
    """Whether a value under this key is dropped whole, whatever it looks like."""
    name = normal_key(key)
    return name in _SECRET_KEYS or name in _CONTENT_KEYS or name.endswith(_SECRET_SUFFIXES)


def scrub_value(value: Any, key: object = "") -> Any:
    """``value`` with sensitive keys redacted and every string scrubbed, walking dicts and lists.

    Returns new containers; anything that is not a string, number, bool or None becomes its
    scrubbed ``str()`` (so that a log formatter's ``default=str`` cannot let an object through).
    """
    return _walk(value, key, frozenset())


# Sentry event keys whose values are content by definition: a stack frame's local variables (they
# hold request bodies and headers), request cookies and environ, the user.
_EVENT_DROPS = frozenset({"vars", "cookies", "env", "user"})


def scrub_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A Sentry event (as ``before_send`` gets it, already serialized to JSON types) made safe to send.

    Drops the request body (``request.data``) and the keys in ``_EVENT_DROPS`` wherever they are,
    then scrubs every remaining string of the whole event; the input is not modified.
    """
    request = event.get("request")
    if isinstance(request, Mapping) and "data" in request:
        event = {**event, "request": {k: v for k, v in request.items() if k != "data"}}
    return {k: _walk(v, k, _EVENT_DROPS) for k, v in event.items() if k not in _EVENT_DROPS}


def scrub_breadcrumb(crumb: Mapping[str, Any]) -> dict[str, Any]:
    """A breadcrumb (message, data) made safe to keep in memory and, later, to send."""
    return {k: _walk(v, k, frozenset()) for k, v in crumb.items()}


def _walk(value: Any, key: object, drops: frozenset[str]) -> Any:
    if key and is_sensitive_key(key):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, str):
        return scrub_text(value, own_id=bool(key) and normal_key(key) in _OWN_IDS)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {k: _walk(v, k, drops) for k, v in value.items() if k not in drops}
    if isinstance(value, (list, tuple, set, frozenset)):
        # (name, value) pairs are headers or form fields: the name decides, as a dict key would.
        return [[v[0], _walk(v[1], v[0], drops)] if _is_pair(v) else _walk(v, "", drops) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # An event value (an inbound webhook's, say): its field names decide, so ``body`` goes whole.
        return {f.name: _walk(getattr(value, f.name), f.name, drops) for f in dataclasses.fields(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"[{len(value)} bytes]"  # raw bytes are bodies: never their content
    return scrub_text(str(value))


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
