"""The bearer-token rule for admin mutations, shared by every admin endpoint that changes something.

Refused outright (403) when no ``admin.token`` is configured; 401 for a missing or wrong token.
The token is read from the running config at each request, so a reload can rotate it.
"""

from __future__ import annotations

import hmac

from aiohttp import web


def refuse(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"status": status, "message": message}, status=status, headers=headers)


def check_token(request: web.BaseRequest, token: str | None) -> web.Response | None:
    """None when the request may mutate; otherwise the refusal to send."""
    if not token:
        return refuse(403, "admin mutations are disabled: set admin.token in the config")
    supplied = request.headers.get("Authorization", "")
    if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
        return refuse(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="admin"'})
    return None
