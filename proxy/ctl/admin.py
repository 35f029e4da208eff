"""A small client of the admin port for the command line: JSON in and out, every failure one :class:`AdminError`.

The token comes from the environment (:data:`TOKEN_ENV`), never from a command-line flag, which shell history
and ``ps`` would keep. Requests go straight to the admin address: no HTTP proxy from the environment (it would
see the token) and no redirect followed (a redirect would carry the token elsewhere).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from proxy.config.load import DEFAULT_ADMIN_LISTEN

TOKEN_ENV = "RESILIENCE_PROXY_ADMIN_TOKEN"
"""Where the token comes from (never a flag: it would show in ``ps`` and shell history)."""
DEFAULT_ADMIN_URL = f"http://{DEFAULT_ADMIN_LISTEN}"
"""``admin.listen``'s default, on loopback."""
TIMEOUT = 10.0


class AdminError(Exception):
    """What went wrong, worded for the operator; the command prints it and exits 1."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The admin port's HTTP status when it answered with a refusal."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx then surfaces as an HTTPError, reported below


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def admin_url(value: str) -> str:
    """``--admin``: an http(s) URL, or a bare ``host:port`` taken as http://host:port."""
    url = value.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError(f"--admin {value!r}: write the admin port's URL, e.g. {DEFAULT_ADMIN_URL}")
    return url


def admin_from_listen(host: str, port: int) -> str:
    """The URL to reach an ``admin.listen`` address from this machine (a wildcard means loopback)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def env_token() -> str:
    """The token in :data:`TOKEN_ENV`, or ``""``: reads send it when set (a proxy in front may ask for it)."""
    return os.environ.get(TOKEN_ENV, "").strip()


def token_from_env() -> str:
    """The admin token for a mutation, or an error that says where to put it."""
    token = env_token()
    if not token:
        raise AdminError(f"this action needs the sidecar's admin.token: set {TOKEN_ENV} in the environment "
                         f"(it is never a flag, so it stays out of shell history and ps)")
    return token


@dataclass(frozen=True)
class Answer:
    """A decoded JSON answer and the server's clock (its ``Date`` header), for "ago" without clock skew."""

    body: dict[str, Any]
    server_time: float | None


class AdminClient:
    """The admin API at ``base_url``; ``token``, when given, goes with every read too."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT, token: str = "") -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.token = token

    def get(self, path: str) -> Answer:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self._call(urllib.request.Request(self.base_url + path, method="GET", headers=headers))

    def post(self, path: str, body: dict[str, Any], token: str) -> Answer:
        request = urllib.request.Request(self.base_url + path, method="POST", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {token}"})
        return self._call(request)

    def _call(self, request: urllib.request.Request) -> Answer:
        """Send, and translate every failure (network, HTTP status, not JSON) into one AdminError."""
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return Answer(self._json(response.read(), response.status), _date(response.headers.get("Date")))
        except urllib.error.HTTPError as error:
            with error:
                raise AdminError(self._refusal(error.code, error.read(), error.headers.get("Location")),
                                 error.code) from None
        except urllib.error.URLError as error:
            raise AdminError(self._unreachable(error.reason)) from None
        except http.client.HTTPException as error:  # not HTTP at all (another service's port), or cut off
            raise AdminError(f"{self.base_url} did not answer like an HTTP server ({type(error).__name__}): "
                             f"is --admin the sidecar's admin port?") from None
        except OSError as error:  # timeouts and resets once connected
            raise AdminError(self._unreachable(error)) from None

    def _json(self, raw: bytes, status: int) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise AdminError(f"{self.base_url} answered HTTP {status} but not with the admin API's JSON: "
                             f"is --admin the sidecar's admin port (admin.listen), not its data port?")
        return body

    def _refusal(self, status: int, raw: bytes, location: str | None) -> str:
        try:
            message = str(json.loads(raw).get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        if status == 401:
            return (f"the admin port refused the token (HTTP 401): {TOKEN_ENV} does not hold this sidecar's "
                    f"admin.token")
        if status == 403:
            return f"the admin port refused the action (HTTP 403): {message or 'forbidden'}"
        if 300 <= status < 400:
            return (f"{self.base_url} answered with a redirect (HTTP {status}{' to ' + location if location else ''}),"
                    f" which is not followed: point --admin at the admin port itself")
        return f"the admin port answered HTTP {status}" + (f": {message}" if message else "")

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, TimeoutError):
            return f"no answer from the admin port at {self.base_url} within {self.timeout:g}s"
        return (f"cannot reach the admin port at {self.base_url}: {_reason(reason)} "
                f"(is the sidecar running? point --admin at its admin.listen)")


def _reason(reason: object) -> str:
    """A socket error in a few lowercase words (``connection refused``), not its errno tuple."""
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
