"""The command line's side of the admin port: where it is, the token, and errors a person can act on.

Plain ``urllib`` (a command that runs once needs no event loop). Every failure becomes one
:class:`AdminUnreachable` whose message says what happened and what to try, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any

from proxy.config.load import DEFAULT_ADMIN_LISTEN

DEFAULT_ADMIN = f"http://{DEFAULT_ADMIN_LISTEN}"
"""``admin.listen``'s default (on loopback)."""
TOKEN_ENV = "RESILIENCE_PROXY_ADMIN_TOKEN"
"""Where the token comes from (never a flag: it would show in ``ps`` and shell history)."""
TIMEOUT = 5.0


class AdminUnreachable(Exception):
    """The admin port did not give a usable answer; the message is the whole explanation."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect would carry the token elsewhere: it surfaces as an HTTP error instead


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
"""Straight to the admin address: no proxy from the environment (it would see the token), no redirect."""


def admin_from_listen(host: str, port: int) -> str:
    """The URL to reach an ``admin.listen`` address from this machine (a wildcard means loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def get_json(admin: str, path: str, timeout: float = TIMEOUT) -> Any:
    """GET ``admin`` + ``path`` as JSON, with the token from the environment when set."""
    url = admin.rstrip("/") + path
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        raise AdminUnreachable(f"{url}: HTTP {error.code}: {_message(error.read())}") from None
    except urllib.error.URLError as error:
        raise AdminUnreachable(f"cannot reach the admin port at {admin}: {_reason(error.reason)} "
                               "(is the sidecar running? point --admin at its admin.listen)") from None
    except TimeoutError:
        raise AdminUnreachable(f"no answer from the admin port at {admin} within {timeout:g}s") from None
    except OSError as error:  # a reset while reading the answer
        raise AdminUnreachable(f"cannot reach the admin port at {admin}: {_reason(error)}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise AdminUnreachable(f"{url} did not answer with JSON: is {admin} a resilience-proxy admin port?") from None


def check_url(admin: str) -> str:
    """``--admin``: an http(s) URL; ValueError says what to write."""
    if not admin.startswith(("http://", "https://")):
        raise ValueError(f"--admin must be an http:// or https:// URL such as {DEFAULT_ADMIN}, not {admin!r}")
    return admin


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def _message(body: bytes) -> str:
    try:
        answer = json.loads(body)
        return str(answer.get("message", answer)) if isinstance(answer, dict) else str(answer)
    except ValueError:
        return body[:200].decode("utf-8", "replace") or "no message"
