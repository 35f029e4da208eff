"""The scrubber on what Twilio and Google Calendar traffic really looks like (shapes from their API
references), on Sentry's event shape, and on the log formatter."""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys

import pytest

from proxy.observe.logs import JsonFormatter
from proxy.observe.scrub import REDACTED, scrub_breadcrumb, scrub_event, scrub_text, scrub_value

ACCOUNT = "AC5ef8732a3c49700934481addd5ce1659"
MESSAGE_SID = "SM1f0e8ae6ade43cb3c0ce4525424e404f"
AUTH_TOKEN = "9a8b7c6d5e4f30211203f4e5d6c7b8a9"
API_KEY_SECRET = "Xy7Q2mRtLp9sVb4NcK8wZe3HjF6uGd1A"
GOOGLE_KEY = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
OAUTH = "ya29.a0AfB_byC1xyz-9kLm_NoPq.rStU"

TWILIO_MESSAGE = {  # GET .../Messages/{sid}.json
    "account_sid": ACCOUNT, "api_version": "2010-04-01", "body": "Hi Bob, your code is 731905",
    "date_created": "Thu, 24 Aug 2023 05:01:45 +0000", "direction": "outbound-api", "error_code": None,
    "from": "whatsapp:+14155238886", "to": "whatsapp:+15005550006", "messaging_service_sid": None,
    "num_media": "0", "num_segments": "1", "price": None, "sid": MESSAGE_SID, "status": "queued",
    "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{MESSAGE_SID}.json",
}
TWILIO_ERROR = {"code": 21211, "message": "The 'To' number +1 415-555-0100 is not a valid phone number.",
                "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}
CALENDAR_EVENT = {  # events.insert body
    "id": "a1b2c3d4e5f6g7h8", "summary": "Root canal - Bob Jones", "description": "Call +1 (555) 010-0199 if late",
    "location": "12 Harley Street, London", "start": {"dateTime": "2025-03-01T10:00:00+01:00", "timeZone": "Europe/London"},
    "end": {"dateTime": "2025-03-01T11:00:00+01:00"},
    "attendees": [{"email": "bob.jones@example.com", "displayName": "Bob Jones", "responseStatus": "needsAction"},
                  {"email": "dr.who@clinic.example.co.uk", "optional": True}],
    "organizer": {"email": "front-desk@clinic.example.co.uk", "self": True},
    "conferenceData": {"entryPoints": [{"entryPointType": "phone", "uri": "tel:+1-555-010-0199", "label": "+1 555-010-0199"}]},
    "reminders": {"useDefault": False, "overrides": [{"method": "email", "minutes": 1440}]},
}
GOOGLE_ERROR = {"error": {"code": 403, "message": "Rate Limit Exceeded", "errors": [
    {"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}]}}


def flat(value: object) -> str:
    return json.dumps(value)


@pytest.mark.parametrize(("text", "expected"), [
    ("+15551234567", "[phone]"),
    ("to +1 415-555-0100 and +1 (415) 555-0100 and +44 20 7946 0958", "to [phone] and [phone] and [phone]"),
    ("whatsapp:+15557654321", "whatsapp:[phone]"),
    ("To=%2B15551234567&From=whatsapp%3A%2B15557654321&Body=Your+code+is+731905",
     "To=[phone]&From=whatsapp%3A[phone]&Body=[redacted]"),
    ("To=+15551234567&Body=Your code is 731905", "To=[phone]&Body=[redacted]"),
    ("bob.jones@example.com wrote", "[email] wrote"),
    ("/calendar/v3/calendars/team%20cal%40example.com/events?key=" + GOOGLE_KEY + "&alt=json",
     "/calendar/v3/calendars/[email]/events?key=[redacted]&alt=json"),
    ("?access_token=" + OAUTH + "&token=t0k&api_key=k&sig=s1&signature=s2&alt=json",
     "?access_token=[redacted]&token=[redacted]&api_key=[redacted]&sig=[redacted]&signature=[redacted]&alt=json"),
    ("Authorization: Bearer " + OAUTH, "Authorization: Bearer [redacted]"),
    ("Basic QUM1ZWY4NzMyYTNjNDk3MDA5MzQ0ODFhZGRkNWNlMTY1OTpzZWNyZXQ=", "Basic [redacted]"),
    ("oauth " + OAUTH + " key " + GOOGLE_KEY, "oauth [token] key [token]"),
    ("auth token " + AUTH_TOKEN + ", api secret " + API_KEY_SECRET, "auth token [token], api secret [token]"),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack [token]"),
    ('{"summary": "Root canal", "email": "a@b.example", "status": "confirmed"}',
     '{"summary": "[redacted]", "email": "[redacted]", "status": "confirmed"}'),
    (str({"Body": "Your code is 731905", "To": "+15551234567"}), "{'Body': \"[redacted]\", 'To': '[phone]'}"),
])
def test_text(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize("text", [
    f"message {MESSAGE_SID} for account {ACCOUNT} failed",  # SIDs: identifiers needed to debug
    "breaker twilio/twilio_sms open: 3 consecutive failures",
    "twilio: cannot connect to 127.0.0.1:45678 (Connection refused)",
    "2025-03-01T10:00:00+01:00 Thu, 24 Aug 2023 05:01:45 +0000 error 21211, 20429, +15 retries",
    "google: no response in 10s; reason rateLimitExceeded; monkey=banana",
])
def test_text_that_stays(text: str) -> None:
    assert scrub_text(text) == text


def test_twilio_message_and_error() -> None:
    scrubbed = scrub_value({"message": TWILIO_MESSAGE, "error": TWILIO_ERROR})
    assert scrubbed["message"] == {**TWILIO_MESSAGE, "body": REDACTED, "from": "whatsapp:[phone]",
                                   "to": "whatsapp:[phone]"}
    assert scrubbed["error"] == {**TWILIO_ERROR, "message": "The 'To' number [phone] is not a valid phone number."}


def test_calendar_event_anywhere_in_nested_data() -> None:
    scrubbed = scrub_value({"batch": [{"request": CALENDAR_EVENT}, (CALENDAR_EVENT,)]})
    for event in (scrubbed["batch"][0]["request"], scrubbed["batch"][1][0]):
        assert event["summary"] == event["description"] == event["location"] == REDACTED
        assert event["attendees"] == [
            {"email": REDACTED, "displayName": REDACTED, "responseStatus": "needsAction"},
            {"email": REDACTED, "optional": True}]
        assert event["organizer"] == {"email": REDACTED, "self": True}
        assert event["conferenceData"]["entryPoints"][0] == {"entryPointType": "phone", "uri": "tel:[phone]",
                                                             "label": "[phone]"}
        assert event["start"] == CALENDAR_EVENT["start"] and event["id"] == CALENDAR_EVENT["id"]
        assert event["reminders"]["overrides"] == [{"method": "email", "minutes": 1440}]
    assert scrub_value(GOOGLE_ERROR) == GOOGLE_ERROR  # the reason is what debugging needs


def test_secret_headers_in_any_spelling() -> None:
    headers = {"Authorization": "Basic QUM6dG9rZW4=", "x-twilio-signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
               "COOKIE": "sid=1", "Set-Cookie": "a=b", "HTTP_X_TWILIO_SIGNATURE": "abc", "X_Goog_Api_Key": GOOGLE_KEY,
               "Proxy-Authorization": "Basic eDp5", "Content-Type": "application/x-www-form-urlencoded",
               "User-Agent": "twilio-python/9.13.0 (Linux x86_64) Python/3.11.7", "X-Request-Id": AUTH_TOKEN}
    assert scrub_value(headers) == {
        **{name: REDACTED for name in list(headers)[:7]},
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "twilio-python/9.13.0 (Linux x86_64) Python/3.11.7",
        "X-Request-Id": AUTH_TOKEN,  # a request id is ours (or the app's), not a credential
    }


def test_own_ids_keep_their_hex_but_not_a_phone_number() -> None:
    request_id = "d2b1c0ffee5a4e0f9a7b3c6d8e1f2a43"
    assert scrub_value({"request_id": request_id, "other": request_id}) == {"request_id": request_id,
                                                                            "other": "[token]"}
    assert scrub_value({"request_id": "+15551234567"}) == {"request_id": "[phone]"}


def test_objects_and_bytes() -> None:
    class Payload:
        def __str__(self) -> str:
            return "to +15551234567"

    assert scrub_value([Payload(), b"To=%2B15551234567", 3, 2.5, None, True]) == [
        "to [phone]", "[17 bytes]", 3, 2.5, None, True]


def sentry_event() -> dict[str, object]:
    """What ``before_send`` receives (already serialized), with PII everywhere it can hide."""
    return {
        "event_id": "c5dd8cf90d964debaa535c091ef6c8c6",
        "message": "send to +15551234567 failed",
        "logentry": {"message": "twilio said %s", "params": [TWILIO_ERROR]},
        "exception": {"values": [{"type": "ValueError", "value": f"bad key={GOOGLE_KEY}", "stacktrace": {"frames": [
            {"function": "handle", "context_line": "    raise ValueError(...)",
             "vars": {"body": "'To=%2B15551234567&Body=Hi'", "request": "<Request POST /twilio/...>"}}]}}]},
        "threads": {"values": [{"stacktrace": {"frames": [{"function": "f", "vars": {"x": "Bob Jones"}}]}}]},
        "request": {"url": "http://127.0.0.1/calendar/v3/calendars/bob%40example.com/events",
                    "query_string": f"key={GOOGLE_KEY}&alt=json", "method": "POST",
                    "headers": {"Authorization": f"Bearer {OAUTH}", "Content-Type": "application/json"},
                    "data": {"summary": "Root canal", "text": "Dentist appointment"}, "cookies": {"sid": "1"},
                    "env": {"REMOTE_ADDR": "10.1.2.3"}},
        "user": {"ip_address": "10.1.2.3", "email": "bob@example.com"},
        "breadcrumbs": {"values": [{"category": "http", "message": "POST", "data": {"event": CALENDAR_EVENT}}]},
        "extra": {"form": {"To": "+15551234567", "Body": "Dentist appointment"}, "request_id": "d2b1c0ffee5a4e0f"},
        "tags": {"upstream": "twilio", "to": "+15551234567"},
        "contexts": {"trace": {"trace_id": "d7a45c56a59b4436902f8a228aad83c8", "span_id": "9cb1e012d60c3260"}},
        "fingerprint": ["upstream-failure", "twilio", "twilio_sms", "http_response_timeout"],
    }


def test_sentry_event_walked_whole_without_touching_the_input() -> None:
    event = sentry_event()
    original = copy.deepcopy(event)
    scrubbed = scrub_event(event)
    assert event == original
    text = flat(scrubbed)
    for secret in ("5551234567", "Bob Jones", "Dentist", "Root canal", "bob", "@example.com", "%40example",
                   GOOGLE_KEY, OAUTH, "10.1.2.3", "Hi'"):
        assert secret not in text, secret
    assert "user" not in scrubbed
    assert scrubbed["request"] == {"url": "http://127.0.0.1/calendar/v3/calendars/[email]/events",
                                   "query_string": "key=[redacted]&alt=json", "method": "POST",
                                   "headers": {"Authorization": REDACTED, "Content-Type": "application/json"}}
    assert all("vars" not in frame for frame in scrubbed["exception"]["values"][0]["stacktrace"]["frames"])
    assert scrubbed["event_id"] == original["event_id"] and scrubbed["contexts"] == original["contexts"]
    assert scrubbed["fingerprint"] == original["fingerprint"]
    assert scrubbed["tags"] == {"upstream": "twilio", "to": "[phone]"}


def test_breadcrumb() -> None:
    crumb = {"category": "resilience_proxy", "message": "retrying to bob@example.com", "level": "info",
             "data": {"event": CALENDAR_EVENT, "url": f"/x?access_token={OAUTH}"}}
    scrubbed = scrub_breadcrumb(crumb)
    assert scrubbed["message"] == "retrying to [email]"
    assert scrubbed["data"]["url"] == "/x?access_token=[redacted]"
    assert "bob.jones" not in flat(scrubbed)


def test_json_log_lines_are_scrubbed() -> None:
    try:
        raise RuntimeError(f"Twilio rejected Authorization Basic QUM6{AUTH_TOKEN}")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("resilience_proxy", logging.ERROR, __file__, 1, "sending %s to %s", (
        "Your code is 731905", "+15551234567"), exc_info)
    record.request_id = "d2b1c0ffee5a4e0f9a7b3c6d8e1f2a43"
    record.headers = {"X-Twilio-Signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8=", "Accept": "*/*"}
    record.event = CALENDAR_EVENT
    line = JsonFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["msg"] == "sending Your code is 731905 to [phone]"  # free text: only its patterns go
    assert parsed["request_id"] == "d2b1c0ffee5a4e0f9a7b3c6d8e1f2a43"
    assert parsed["headers"] == {"X-Twilio-Signature": REDACTED, "Accept": "*/*"}
    assert parsed["event"]["attendees"][0]["email"] == REDACTED
    assert "Basic [redacted]" in parsed["exc"] and AUTH_TOKEN not in line
    for secret in ("5551234567", "bob.jones", "RSOYDt4T1"):
        assert secret not in line


def test_the_scrubber_imports_no_io_library() -> None:
    code = ("import sys, proxy.observe.scrub; "
            "print(','.join(m for m in ('asyncio', 'aiohttp', 'sentry_sdk', 'slack_sdk') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""
