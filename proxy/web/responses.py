"""Answers the sidecar writes itself: an RFC 9209 ``Proxy-Status`` header and a JSON body.

The body has ``status``, ``code`` and ``message`` because Twilio's and Google's SDKs read
those names from error bodies; the app sees the sidecar's reason in its SDK's exception.
"""

from __future__ import annotations

import json

from aiohttp import web

from proxy.errors import ProxyError

PROXY_NAME = "resilience-proxy"


def proxy_status(error_type: str, details: str) -> str:
    """A ``Proxy-Status`` field value; details become an sf-string (ASCII, quotes escaped)."""
    safe = details.encode("ascii", "replace").decode("ascii")
    safe = "".join(c if " " <= c <= "~" else "?" for c in safe).replace("\\", "\\\\").replace('"', '\\"')
    return f'{PROXY_NAME}; error={error_type}; details="{safe}"'


def error_response(error: ProxyError, request_id: str) -> web.Response:
    body = {
        "status": error.status,
        "code": error.proxy_status,
        "message": error.message,
        "upstream": error.upstream,
        "request_id": request_id,
    }
    headers = {"Proxy-Status": proxy_status(error.proxy_status, error.details), "X-Request-Id": request_id,
               **error.response_headers()}
    return web.Response(status=error.status, body=json.dumps(body).encode(), content_type="application/json",
                        headers=headers)
