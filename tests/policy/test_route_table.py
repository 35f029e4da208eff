"""Route matching: pure functions, no I/O."""

from __future__ import annotations

import pytest

from proxy.config.model import DEFAULT_ROUTE, Route, Upstream
from proxy.policy.routing import RouteTable, parse_body_fields

FIVE_XX = frozenset(range(500, 600))


def route(name: str, methods=None, path=None, body=()) -> Route:  # type: ignore[no-untyped-def]
    return Route(name, frozenset(methods) if methods else None, path, body, None, FIVE_XX)


TABLE = RouteTable(Upstream(
    name="twilio", url="https://api.twilio.com", prefix="/twilio", timeout=1, connect_timeout=1,
    max_request_body=1, max_connections=1, ca_bundle=None, forwarded_headers=False, strip_headers=(), source="t",
    routes=(
        route("twilio_whatsapp", ["POST"], "/2010-04-01/Accounts/{account}/Messages.json", (("To", "whatsapp:*"),)),
        route("twilio_sms", ["POST"], "/2010-04-01/Accounts/{account}/Messages.json"),
        route("message", ["GET"], "/2010-04-01/Accounts/*/Messages/{sid}.json"),
        route("calls", None, "/2010-04-01/Accounts/{account}/Calls/**"),
    ),
    default_route=route(DEFAULT_ROUTE),
))
MESSAGES = "/2010-04-01/Accounts/AC123/Messages.json"


@pytest.mark.parametrize(("method", "path", "body", "name", "captures"), [
    ("POST", MESSAGES, {"To": "whatsapp:+15550001111"}, "twilio_whatsapp", {"account": "AC123"}),
    ("POST", MESSAGES, {"To": "+15550001111"}, "twilio_sms", {"account": "AC123"}),
    ("POST", MESSAGES, None, "twilio_sms", {"account": "AC123"}),
    ("GET", MESSAGES, None, DEFAULT_ROUTE, {}),
    ("GET", "/2010-04-01/Accounts/AC1/Messages/SM9.json", None, "message", {"sid": "SM9"}),
    ("DELETE", "/2010-04-01/Accounts/AC1/Calls/CA1/Recordings/RE1.json", None, "calls", {"account": "AC1"}),
    ("GET", "/2010-04-01/Accounts/AC1/Calls", None, "calls", {"account": "AC1"}),
    ("POST", "/2010-04-01/Accounts/AC123/Messages.json/extra", None, DEFAULT_ROUTE, {}),
    ("POST", "/2010-04-01/Accounts/team%20a/Messages.json", None, "twilio_sms", {"account": "team%20a"}),
])
def test_first_matching_route_wins(method: str, path: str, body, name: str, captures: dict) -> None:  # type: ignore[no-untyped-def]
    chosen, captured = TABLE.match(method, path, body)
    assert (chosen.name, captured) == (name, captures)


def test_only_requests_that_could_match_a_body_route_need_their_body_read() -> None:
    assert TABLE.needs_body("POST", MESSAGES)
    assert not TABLE.needs_body("GET", MESSAGES)
    assert not TABLE.needs_body("POST", "/2010-04-01/Accounts/AC1/Calls.json")


@pytest.mark.parametrize(("method", "path"), [
    ("POST", MESSAGES), ("GET", MESSAGES), ("GET", "/2010-04-01/Accounts/AC1/Messages/SM9.json"),
    ("GET", "/2010-04-01/Accounts/AC1/Calls"), ("PUT", "/elsewhere"),
])
def test_the_head_decides_the_route_unless_a_body_route_could_match(method: str, path: str) -> None:
    chosen, captured = TABLE.by_head(method, path)
    if TABLE.needs_body(method, path):
        assert (chosen, captured) == (None, {})
    else:
        assert (chosen, captured) == TABLE.match(method, path, None)


@pytest.mark.parametrize(("content_type", "data", "fields"), [
    ("application/x-www-form-urlencoded", b"To=whatsapp%3A%2B1555&Body=hi+there", {"To": "whatsapp:+1555",
                                                                                  "Body": "hi there"}),
    ("application/json; charset=utf-8", b'{"To": "whatsapp:+1"}', {"To": "whatsapp:+1"}),
    ("application/json", b"[1, 2]", None),
    ("application/json", b"{not json", None),
    ("text/plain", b"To=x", None),
    ("application/x-www-form-urlencoded", b"\xff\xfe", None),
])
def test_body_fields(content_type: str, data: bytes, fields) -> None:  # type: ignore[no-untyped-def]
    assert parse_body_fields(content_type, data) == fields
