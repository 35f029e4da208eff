"""Answers the sidecar writes itself: an RFC 9209 ``Proxy-Status`` header and a JSON body.

The body is shaped per upstream (``error_format``, see :mod:`proxy.web.error_formats`) so that
the vendor's SDK raises its usual exception with the sidecar's reason; the headers
(Proxy-Status, Retry-After, RateLimit-*, X-Request-Id) are the same for every format.
"""

from __future__ import annotations

import json

from aiohttp import web

from proxy.errors import ProxyError
from proxy.web.error_formats import error_body

PROXY_NAME = "resilience-proxy"


def proxy_status(error_type: str, details: str) -> str:
    """A ``Proxy-Status`` field value; details become an sf-string (ASCII, quotes escaped)."""
    safe = details.encode("ascii", "replace").decode("ascii")
    safe = "".join(c if " " <= c <= "~" else "?" for c in safe).replace("\\", "\\\\").replace('"', '\\"')
    return f'{PROXY_NAME}; error={error_type}; details="{safe}"'


def error_response(error: ProxyError, request_id: str, error_format: str = "generic") -> web.Response:
    body = error_body(error_format, error.status, error.proxy_status, error.message, error.upstream, request_id)
    headers = {"Proxy-Status": proxy_status(error.proxy_status, error.details), "X-Request-Id": request_id,
               **error.response_headers()}
    return web.Response(status=error.status, body=json.dumps(body).encode(), content_type="application/json",
                        headers=headers)
