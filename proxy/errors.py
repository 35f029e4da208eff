"""The exceptions resilience-proxy raises, in one tree.

    ProxyError                      a request the sidecar answers itself
    ├── InternalError               500: a bug in the sidecar, never the client's fault
    ├── RequestRejected             the client's request is refused (4xx)
    │   ├── NoRoute                 404: no upstream prefix matches
    │   ├── NotAProxyTarget         400/405: absolute-form target or CONNECT
    │   ├── BodyTooLarge            413: over the upstream's body limit
    │   ├── MissingLimitKey         400: a rate limit needs a key the request lacks
    │   ├── RateLimited             429: a rate limit rejects it; Retry-After and RateLimit-* say more
    │   └── WebhookRefused          403: an inbound webhook failed its provider's verification
    ├── LimitUnavailable            503: a rate limit set to deny while its backend is down
    ├── QueueUnavailable            503: ``on_backend_error: reject`` while the webhook store is down
    ├── CircuitOpen                 503: the route's breaker is open; Retry-After says when to try
    └── UpstreamError               the upstream could not answer (5xx)
        ├── UpstreamConnectError    502: refused, DNS, TLS
        ├── UpstreamResponseError   502: reset or garbled before a full response head
        └── UpstreamTimeout         504: no connection or no response in time

Every ProxyError knows the HTTP status the client gets and its RFC 9209 ``Proxy-Status``
error type, so the web layer renders all of them the same way. Errors from aiohttp are
translated into this tree in exactly one place, :mod:`proxy.web.forward`.

ConfigError is separate: it carries every problem found in the configuration, each with
file, line, column and key path.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProxyError(Exception):
    """A request that the sidecar answers itself instead of relaying the upstream's answer."""

    status: int = 502
    proxy_status: str = "proxy_internal_error"

    def __init__(self, message: str, *, upstream: str | None = None, proxy_status: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.upstream = upstream
        if proxy_status is not None:
            self.proxy_status = proxy_status

    @property
    def details(self) -> str:
        """The ``details`` of the Proxy-Status header."""
        return self.message

    def response_headers(self) -> dict[str, str]:
        """Headers the answer carries besides Proxy-Status (Retry-After, RateLimit-*)."""
        return {}


class InternalError(ProxyError):
    status = 500
    proxy_status = "proxy_internal_error"


class RequestRejected(ProxyError):
    """The client's request is refused before any upstream is contacted."""

    status = 400
    proxy_status = "http_request_denied"


class NoRoute(RequestRejected):
    status = 404
    proxy_status = "destination_not_found"


class NotAProxyTarget(RequestRejected):
    """Absolute-form targets and CONNECT would make the sidecar an open proxy."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(RequestRejected):
    status = 413
    proxy_status = "http_request_error"


class MissingLimitKey(RequestRejected):
    """``on_missing_key: reject``: the caller must say whose call this is."""


class RateLimited(RequestRejected):
    """A rate limit rejected the call; the upstream was not contacted and no quota was spent."""

    status = 429

    def __init__(self, message: str, *, upstream: str, limit: str, headers: dict[str, str]) -> None:
        super().__init__(message, upstream=upstream)
        self.limit = limit
        self.headers = headers

    @property
    def details(self) -> str:
        return f"rate limit {self.limit}"

    def response_headers(self) -> dict[str, str]:
        return self.headers


class WebhookRefused(RequestRejected):
    """An inbound webhook whose signature or token does not verify: nothing is stored or delivered."""

    status = 403


class QueueUnavailable(ProxyError):
    """The webhook store cannot take the event (``on_backend_error: reject``): the provider should retry."""

    status = 503
    proxy_status = "proxy_internal_error"

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class LimitUnavailable(ProxyError):
    """``on_backend_error: deny`` while the shared state backend cannot be reached."""

    status = 503
    proxy_status = "http_request_denied"

    def __init__(self, message: str, *, upstream: str, limit: str) -> None:
        super().__init__(message, upstream=upstream)
        self.limit = limit

    @property
    def details(self) -> str:
        return f"rate limit {self.limit}: state backend unavailable"

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class CircuitOpen(ProxyError):
    """Failing fast: the upstream was not contacted."""

    status = 503
    proxy_status = "destination_unavailable"

    def __init__(self, message: str, *, upstream: str, retry_after: int) -> None:
        super().__init__(message, upstream=upstream)
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UpstreamError(ProxyError):
    """The upstream could not be reached or did not answer properly."""


class UpstreamConnectError(UpstreamError):
    """No connection: refused, unresolvable name, TLS failure. The request never reached the upstream."""

    proxy_status = "connection_refused"


class UpstreamResponseError(UpstreamError):
    """The connection broke or the answer was not valid HTTP before a full response head."""

    proxy_status = "http_response_incomplete"


class UpstreamTimeout(UpstreamError):
    status = 504
    proxy_status = "http_response_timeout"


ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration file, located as precisely as the YAML allows."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: str = ERROR
    """ERROR: the config cannot be used as meant; WARNING: it works, but probably not as its author thinks
    (``validate`` fails on warnings only with ``--strict``)."""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        if self.severity == WARNING:
            where += ": warning"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists every error found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
