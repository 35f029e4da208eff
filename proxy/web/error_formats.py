"""Bodies of the answers the sidecar writes itself, shaped like the upstream's own errors.

An app talks to Twilio or Google through their SDKs; those SDKs parse error bodies of one
shape. When the sidecar refuses a call (rate limit, open breaker) or the upstream cannot be
reached, answering in the vendor's shape makes the SDK raise its usual exception with the
sidecar's reason in it, instead of a parse failure or an empty message. Pure: no I/O.

``generic`` (the default): ``{"status", "code", "message", "upstream", "request_id"}``.

``twilio``: ``{"code", "message", "more_info", "status"}`` as Twilio's REST errors, so
twilio-python raises ``TwilioRestException`` with ``.code`` and ``.msg``. Codes are
20000 + the HTTP status, the rule behind Twilio's own 20404, 20429, 20500 and 20503 (those
four link to Twilio's page for them); 20400, 20413, 20502 and 20504 follow the same rule but
are the sidecar's, and link to Twilio's error dictionary.

``google``: ``{"error": {"code", "message", "errors": [{"domain", "reason", "message"}],
"status"}}`` as Google's JSON APIs, so google-api-python-client raises ``HttpError`` whose
``reason`` is the message and ``error_details`` the list; the ``reason`` is the one Google
gives for the same situation (``rateLimitExceeded`` for 429, ``backendError`` for 502/503/504).
"""

from __future__ import annotations

from typing import Any

SOURCE = "resilience-proxy"

TWILIO_DOCUMENTED = frozenset({20404, 20429, 20500, 20503})
TWILIO_ERRORS_PAGE = "https://www.twilio.com/docs/errors/{code}"
TWILIO_DICTIONARY = "https://www.twilio.com/docs/api/errors"

_GOOGLE = {
    400: ("badRequest", "INVALID_ARGUMENT"),
    404: ("notFound", "NOT_FOUND"),
    413: ("uploadTooLarge", "INVALID_ARGUMENT"),
    429: ("rateLimitExceeded", "RESOURCE_EXHAUSTED"),
    500: ("internalError", "INTERNAL"),
    502: ("backendError", "UNAVAILABLE"),
    503: ("backendError", "UNAVAILABLE"),
    504: ("backendError", "DEADLINE_EXCEEDED"),
}


def twilio_code(status: int) -> int:
    return 20000 + status


def error_body(error_format: str, status: int, code: str, message: str, upstream: str | None,
               request_id: str) -> dict[str, Any]:
    """The JSON body for a sidecar-made answer of ``status``; ``code`` is the Proxy-Status error type."""
    text = f"{SOURCE}: {message}"
    if error_format == "twilio":
        number = twilio_code(status)
        more = TWILIO_ERRORS_PAGE.format(code=number) if number in TWILIO_DOCUMENTED else TWILIO_DICTIONARY
        return {"code": number, "message": text, "more_info": more, "status": status}
    if error_format == "google":
        reason, state = _GOOGLE.get(status, ("badRequest", "INVALID_ARGUMENT") if status < 500
                                     else ("backendError", "UNAVAILABLE"))
        return {"error": {"code": status, "message": text,
                          "errors": [{"domain": "global", "reason": reason, "message": text}], "status": state}}
    return {"status": status, "code": code, "message": message, "upstream": upstream, "request_id": request_id}
