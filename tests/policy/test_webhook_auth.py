"""Provider verification, with signatures made by twilio-python's own RequestValidator (form and JSON)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from proxy.config.webhooks import GoogleAuth, HmacAuth, TwilioAuth, Webhook
from proxy.policy.webhook_auth import Verdict, port_variants, verify
from proxy.policy.webhook_request import FORM, InboundRequest

TOKEN = "12345678901234567890123456789012"
PUBLIC = "https://app.example.com/hooks/twilio/status"
VALIDATOR = RequestValidator(TOKEN)
PARAMS = [("AccountSid", "AC123"), ("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("To", "+15005550006"),
          ("Body", "héllo & goodbye"), ("MediaUrl", "b"), ("MediaUrl", "a")]


def twilio(public_url: str = PUBLIC) -> Webhook:
    return Webhook("s", "/hooks/s", "http://127.0.0.1:3000/s", "twilio", twilio=TwilioAuth(TOKEN, public_url))


def request(body: bytes = b"", query: str = "", content_type: str = FORM, **headers: str) -> InboundRequest:
    names = {"content-type": content_type} if content_type else {}
    names.update({name.replace("_", "-").lower(): value for name, value in headers.items()})
    return InboundRequest("POST", query, names, body)


class MultiDict(dict):
    """What a web framework hands RequestValidator: every value of a repeated name."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        for name, value in pairs:
            self.setdefault(name, []).append(value)

    def getall(self, name: str) -> list[str]:
        return self[name]


def form_signature(url: str, pairs: list[tuple[str, str]] = PARAMS) -> str:
    return VALIDATOR.compute_signature(url, MultiDict(pairs))


def test_a_form_callback_signed_by_request_validator_is_accepted() -> None:
    signed = request(urlencode(PARAMS).encode(), X_Twilio_Signature=form_signature(PUBLIC))
    assert VALIDATOR.validate(PUBLIC, MultiDict(PARAMS), signed.header("X-Twilio-Signature"))
    assert verify(twilio(), signed).ok


def test_the_query_twilio_called_with_is_part_of_the_signed_url() -> None:
    query = "tenant=a%20b&x=1"
    signed = request(urlencode(PARAMS).encode(), query=query, X_Twilio_Signature=form_signature(f"{PUBLIC}?{query}"))
    assert verify(twilio(), signed).ok
    assert not verify(twilio(), request(signed.body, query="tenant=other", **_sig(signed))).ok


def _sig(signed: InboundRequest) -> dict[str, str]:
    return {"X_Twilio_Signature": signed.header("X-Twilio-Signature")}


@pytest.mark.parametrize(("configured", "signed_as"), [
    (PUBLIC, "https://app.example.com:443/hooks/twilio/status"),
    ("https://app.example.com:443/hooks/twilio/status", PUBLIC),
    ("http://app.example.com/hooks", "http://app.example.com:80/hooks"),
    ("https://app.example.com:8443/hooks", "https://app.example.com/hooks"),
])
def test_the_url_is_accepted_with_and_without_the_default_port(configured: str, signed_as: str) -> None:
    signed = request(urlencode(PARAMS).encode(), X_Twilio_Signature=form_signature(signed_as))
    assert VALIDATOR.validate(configured, MultiDict(PARAMS), signed.header("X-Twilio-Signature"))
    assert verify(twilio(configured), signed).ok


def test_port_variants_are_request_validators() -> None:
    assert port_variants(PUBLIC) == (PUBLIC, "https://app.example.com:443/hooks/twilio/status")
    assert port_variants("http://h:8080/p?q=1") == ("http://h/p?q=1", "http://h:8080/p?q=1")


@pytest.mark.parametrize(("case", "build"), [
    ("forged", lambda: request(urlencode(PARAMS).encode(), X_Twilio_Signature=base64.b64encode(b"x" * 20).decode())),
    ("missing", lambda: request(urlencode(PARAMS).encode())),
    ("wrong url", lambda: request(urlencode(PARAMS).encode(),
                                  X_Twilio_Signature=form_signature("https://evil.example.com/hooks/twilio/status"))),
    ("wrong token", lambda: request(urlencode(PARAMS).encode(), X_Twilio_Signature=RequestValidator(
        "another-token").compute_signature(PUBLIC, MultiDict(PARAMS)))),
    ("body changed", lambda: request(urlencode([*PARAMS[:-1], ("To", "+15550000000")]).encode(),
                                     X_Twilio_Signature=form_signature(PUBLIC))),
    ("field added", lambda: request(urlencode([*PARAMS, ("Extra", "1")]).encode(),
                                    X_Twilio_Signature=form_signature(PUBLIC))),
    ("non-ascii signature", lambda: request(urlencode(PARAMS).encode(), X_Twilio_Signature="sïgnature")),
])
def test_forged_missing_or_mismatched_signatures_are_refused(case: str, build) -> None:  # type: ignore[no-untyped-def]
    verdict = verify(twilio(), build())
    assert not verdict.ok
    assert "X-Twilio-Signature" in verdict.reason
    assert TOKEN not in verdict.reason and "+1500" not in verdict.reason


def test_the_host_header_never_decides_the_url() -> None:
    """An attacker who can sign for their own host must not be accepted by pointing Host at it."""
    evil = "https://evil.example.com/hooks/twilio/status"
    signed = request(urlencode(PARAMS).encode(), X_Twilio_Signature=form_signature(evil), host="evil.example.com")
    assert not verify(twilio(), signed).ok


def json_request(body: bytes, signed_body: bytes | None = None) -> InboundRequest:
    """A JSON webhook as Twilio sends it: bodySHA256 in the query, the URL alone signed."""
    query = f"bodySHA256={hashlib.sha256(signed_body if signed_body is not None else body).hexdigest()}"
    signature = VALIDATOR.compute_signature(f"{PUBLIC}?{query}", {})
    return request(body, query=query, content_type="application/json", X_Twilio_Signature=signature)


def test_a_json_webhook_signed_by_request_validator_is_accepted() -> None:
    body = json.dumps({"MessageSid": "SM1", "MessageStatus": "sent"}).encode()
    signed = json_request(body)
    assert VALIDATOR.validate(f"{PUBLIC}?{signed.query}", body.decode(), signed.header("X-Twilio-Signature"))
    assert verify(twilio(), signed).ok


def test_a_json_body_that_does_not_hash_to_body_sha256_is_refused() -> None:
    verdict = verify(twilio(), json_request(b'{"MessageStatus": "failed"}', signed_body=b'{"MessageStatus": "sent"}'))
    assert verdict == Verdict(False, "bodySHA256 does not match the body")


def test_a_json_body_without_body_sha256_is_refused_as_unsigned() -> None:
    signed = request(b'{"a": 1}', content_type="application/json",
                     X_Twilio_Signature=VALIDATOR.compute_signature(PUBLIC, {}))
    assert verify(twilio(), signed).reason == "a application/json body without bodySHA256 is not signed"


def test_a_get_callback_signs_its_query() -> None:
    query = "CallSid=CA1&CallStatus=completed"
    signed = InboundRequest("GET", query, {"x-twilio-signature": form_signature(f"{PUBLIC}?{query}", [])}, b"")
    assert verify(twilio(), signed).ok


GOOGLE = Webhook("g", "/g", "http://127.0.0.1:3000/g", "google", google=GoogleAuth("channel-secret"))


@pytest.mark.parametrize(("token", "ok", "reason"), [
    ("channel-secret", True, ""),
    ("channel-secreT", False, "X-Goog-Channel-Token does not match"),
    ("channel-secret-and-more", False, "X-Goog-Channel-Token does not match"),
    ("", False, "missing X-Goog-Channel-Token"),
    ("çhannel", False, "X-Goog-Channel-Token does not match"),
])
def test_the_google_channel_token_is_checked(token: str, ok: bool, reason: str) -> None:
    headers = {"x-goog-channel-token": token} if token else {}
    assert verify(GOOGLE, InboundRequest("POST", "", headers, b"")) == Verdict(ok, reason)


BODY = b'{"action": "opened", "number": 7}'
DIGEST = hmac.new(b"s3cret", BODY, hashlib.sha256).digest()


def hmac_hook(encoding: str | None = None) -> Webhook:
    return Webhook("h", "/h", "http://127.0.0.1:3000/h", "hmac",
                   hmac=HmacAuth("s3cret", "X-Hub-Signature-256", encoding))  # type: ignore[arg-type]


@pytest.mark.parametrize(("encoding", "signature"), [
    (None, DIGEST.hex()),
    (None, "sha256=" + DIGEST.hex()),
    (None, "SHA256=" + DIGEST.hex().upper()),
    (None, base64.b64encode(DIGEST).decode()),
    (None, "sha256=" + base64.b64encode(DIGEST).decode()),
    ("hex", DIGEST.hex()),
    ("base64", base64.b64encode(DIGEST).decode()),
])
def test_hmac_signatures_in_hex_or_base64_with_an_optional_prefix(encoding: str | None, signature: str) -> None:
    assert verify(hmac_hook(encoding), request(BODY, content_type="application/json",
                                               X_Hub_Signature_256=signature)).ok


@pytest.mark.parametrize(("encoding", "signature", "reason"), [
    (None, "", "missing X-Hub-Signature-256"),
    (None, hmac.new(b"other", BODY, hashlib.sha256).hexdigest(), "X-Hub-Signature-256 does not match"),
    (None, "sha1=" + DIGEST.hex(), "X-Hub-Signature-256 does not match"),
    (None, "not base64 at all!", "X-Hub-Signature-256 does not match"),
    ("base64", DIGEST.hex(), "X-Hub-Signature-256 does not match"),
    ("hex", base64.b64encode(DIGEST).decode(), "X-Hub-Signature-256 does not match"),
])
def test_bad_hmac_signatures_are_refused(encoding: str | None, signature: str, reason: str) -> None:
    headers = {"X_Hub_Signature_256": signature} if signature else {}
    verdict = verify(hmac_hook(encoding), request(BODY, content_type="application/json", **headers))
    assert (verdict.ok, verdict.reason) == (False, reason)


def test_a_changed_body_fails_hmac() -> None:
    assert not verify(hmac_hook(), request(BODY + b" ", X_Hub_Signature_256=DIGEST.hex())).ok


def test_provider_none_accepts_anything() -> None:
    assert verify(Webhook("n", "/n", "http://127.0.0.1/n", "none"), request(b"anything")).ok
