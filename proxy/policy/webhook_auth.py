"""Is this request really from the provider? One pure check per ``provider``, constant-time compares only.

- **twilio**: ``X-Twilio-Signature`` is base64 HMAC-SHA1, keyed with the auth token, over the URL Twilio
  called followed by every form field sorted by name (a repeated name: each distinct value, sorted), as
  twilio-python's ``RequestValidator`` computes it. The URL is ``public_url`` plus the request's raw
  query, never the Host header (behind TLS termination the sidecar sees another URL than Twilio
  signed). As RequestValidator does, the URL is tried with and without the scheme's default port,
  because Twilio is inconsistent about ports. JSON webhooks carry ``bodySHA256`` in the query: the URL
  alone is signed, and that parameter must equal the hex SHA-256 of the raw body. Any other body
  without ``bodySHA256`` is refused: the signature would not cover it.
- **google**: ``X-Goog-Channel-Token`` equals the channel token given to ``watch``.
- **hmac**: a configured header holds HMAC-SHA256 of the raw body, hex or base64, optionally prefixed
  ``sha256=`` (GitHub style).
- **none**: nothing to check (``validate`` warns when such a webhook listens beyond loopback).

A refusal's reason names what failed, never a value from the request or a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

from proxy.config.webhooks import HmacAuth, TwilioAuth, Webhook
from proxy.policy.webhook_request import FORM, InboundRequest

TWILIO_SIGNATURE = "X-Twilio-Signature"
GOOGLE_TOKEN = "X-Goog-Channel-Token"
_DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    """Why it was refused, in a few words (for the 403 body and the log)."""


ACCEPTED = Verdict(True)


def verify(webhook: Webhook, request: InboundRequest) -> Verdict:
    """Whether ``request`` passes ``webhook``'s provider check."""
    if webhook.twilio is not None:
        return verify_twilio(webhook.twilio, request)
    if webhook.google is not None:
        return _equal_secret(request.header(GOOGLE_TOKEN), webhook.google.channel_token, GOOGLE_TOKEN)
    if webhook.hmac is not None:
        return verify_hmac(webhook.hmac, request)
    return ACCEPTED


def verify_twilio(auth: TwilioAuth, request: InboundRequest) -> Verdict:
    signature = request.header(TWILIO_SIGNATURE)
    if not signature:
        return Verdict(False, f"missing {TWILIO_SIGNATURE}")
    url = auth.public_url + (f"?{request.query}" if request.query else "")
    body_hash = parse_qs(request.query).get("bodySHA256")
    if body_hash:
        if not hmac.compare_digest(hashlib.sha256(request.body).hexdigest().encode(), _ascii(body_hash[0])):
            return Verdict(False, "bodySHA256 does not match the body")
        params: tuple[tuple[str, str], ...] = ()
    elif request.body and request.media_type != FORM:
        return Verdict(False, f"a {request.media_type or 'non-form'} body without bodySHA256 is not signed")
    else:
        params = request.form
    given = _ascii(signature.strip())
    key = auth.auth_token.encode()
    if any(hmac.compare_digest(twilio_signature(key, candidate, params), given) for candidate in port_variants(url)):
        return ACCEPTED
    return Verdict(False, f"{TWILIO_SIGNATURE} does not match")


def twilio_signature(key: bytes, url: str, params: tuple[tuple[str, str], ...]) -> bytes:
    """Base64 HMAC-SHA1 of ``url`` and the fields sorted by name, each name's distinct values sorted."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha1).digest())


def port_variants(url: str) -> tuple[str, str]:
    """``url`` without any port, and with its port (the scheme's default when none is written): the two
    URLs twilio-python's RequestValidator tries."""
    parts = urlsplit(url)
    host = parts.netloc if parts.port is None else parts.netloc.rsplit(":", 1)[0]
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    return urlunsplit(parts._replace(netloc=host)), urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def verify_hmac(auth: HmacAuth, request: InboundRequest) -> Verdict:
    given = request.header(auth.header).strip()
    if not given:
        return Verdict(False, f"missing {auth.header}")
    if given[:7].lower() == "sha256=":
        given = given[7:]
    expected = hmac.new(auth.secret.encode(), request.body, hashlib.sha256).digest()
    decoded = _decode(given, auth.encoding)
    if decoded is not None and hmac.compare_digest(decoded, expected):
        return ACCEPTED
    return Verdict(False, f"{auth.header} does not match")


def _decode(text: str, encoding: str | None) -> bytes | None:
    """The digest bytes of a hex or base64 signature; None when it is neither. Without a configured
    encoding, 64 characters are hex (base64 of 32 bytes is 44)."""
    try:
        if encoding == "hex" or (encoding is None and len(text) == 64):
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def _equal_secret(given: str, secret: str, header: str) -> Verdict:
    if not given:
        return Verdict(False, f"missing {header}")
    if hmac.compare_digest(_ascii(given), secret.encode()):
        return ACCEPTED
    return Verdict(False, f"{header} does not match")


def _ascii(text: str) -> bytes:
    """Header text as bytes for compare_digest (which refuses non-ASCII str); aiohttp decodes headers as UTF-8
    with surrogate escapes, which round-trip here."""
    return text.encode("utf-8", "surrogateescape")
