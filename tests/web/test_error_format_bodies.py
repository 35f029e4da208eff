"""The sidecar's own error bodies in each vendor's shape (pure)."""

from __future__ import annotations

from proxy.web.error_formats import error_body


def test_generic_keeps_the_proxy_status_type_and_request_id() -> None:
    assert error_body("generic", 503, "destination_unavailable", "circuit sms open", "twilio", "r1") == {
        "status": 503, "code": "destination_unavailable", "message": "circuit sms open", "upstream": "twilio",
        "request_id": "r1"}


def test_twilio_codes_are_20000_plus_the_status_and_link_only_to_pages_that_exist() -> None:
    assert error_body("twilio", 429, "http_request_denied", "rate limit account", "twilio", "r1") == {
        "code": 20429, "message": "resilience-proxy: rate limit account",
        "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}
    assert error_body("twilio", 503, "destination_unavailable", "x", "twilio", "r")["code"] == 20503
    timeout = error_body("twilio", 504, "http_response_timeout", "x", "twilio", "r")
    assert (timeout["code"], timeout["more_info"]) == (20504, "https://www.twilio.com/docs/api/errors")


def test_google_reasons_and_statuses_follow_googles_own() -> None:
    body = error_body("google", 429, "http_request_denied", "rate limit project", "google", "r1")
    assert body == {"error": {"code": 429, "message": "resilience-proxy: rate limit project",
                              "errors": [{"domain": "global", "reason": "rateLimitExceeded",
                                          "message": "resilience-proxy: rate limit project"}],
                              "status": "RESOURCE_EXHAUSTED"}}
    reasons = {status: (error_body("google", status, "", "x", "g", "r")["error"]["errors"][0]["reason"],
                        error_body("google", status, "", "x", "g", "r")["error"]["status"])
               for status in (400, 413, 502, 503, 504)}
    assert reasons == {400: ("badRequest", "INVALID_ARGUMENT"), 413: ("uploadTooLarge", "INVALID_ARGUMENT"),
                       502: ("backendError", "UNAVAILABLE"), 503: ("backendError", "UNAVAILABLE"),
                       504: ("backendError", "DEADLINE_EXCEEDED")}
