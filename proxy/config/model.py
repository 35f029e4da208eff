"""Typed, immutable configuration values: what the rest of the sidecar reads.

Built once by :mod:`proxy.config.load`; nothing here does I/O or validation.
Durations are seconds (float) and sizes are bytes (int).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from proxy.config.policy_values import BreakerPolicy, LimitPolicy, RetryPolicy

if TYPE_CHECKING:  # loaded with the webhook reader, by a config that declares webhooks
    from proxy.config.webhooks import Webhook


@dataclass(frozen=True)
class Address:
    """A host and port to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """Only this host can reach it (``localhost`` counts; any other name does not)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class Route:
    """A named slice of an upstream's traffic with its own breaker (and, later, retries and limits)."""

    name: str
    methods: frozenset[str] | None
    """Upper-case methods; None matches any."""
    path: str | None
    """Pattern on the path after the prefix: ``{name}`` captures a segment, ``*`` matches one, a final
    ``**`` matches the rest. None matches any path."""
    body: tuple[tuple[str, str], ...]
    """(field, glob) pairs a form or JSON body must match, e.g. ``("To", "whatsapp:*")``."""
    breaker: BreakerPolicy | None
    """None: no breaker on this route."""
    failure_statuses: frozenset[int]
    """Upstream statuses that count as failures (429 never does: it is a rate signal)."""
    retry: RetryPolicy = RetryPolicy(attempts=0)
    rate_limits: tuple[LimitPolicy, ...] = ()
    """Every limit a request through this route must pass: the upstream's, then the route's own."""


DEFAULT_ROUTE = "default"

@dataclass(frozen=True)
class BreakerId:
    """One breaker: a route of an upstream. Stores, events and metrics know it by ``key``
    (``upstream/route``); operators and error messages by ``name`` (the route, or the upstream
    for its default route)."""

    upstream: str
    route: str = DEFAULT_ROUTE

    @classmethod
    def of(cls, upstream: Upstream, route: Route) -> BreakerId:
        return cls(upstream.name, route.name)

    @classmethod
    def parse(cls, key: str) -> BreakerId:
        """The identity behind a ``key`` (a key without a route names the upstream's default route)."""
        upstream, _, route = key.partition("/")
        return cls(upstream, route or DEFAULT_ROUTE)

    @property
    def key(self) -> str:
        return f"{self.upstream}/{self.route}"

    @property
    def name(self) -> str:
        return self.upstream if self.route == DEFAULT_ROUTE else self.route


ERROR_FORMATS = ("generic", "twilio", "google")
"""How the sidecar shapes the errors it answers itself (``error_format``); rendered by :mod:`proxy.web.error_formats`."""


@dataclass(frozen=True)
class Upstream:
    """A third-party API reached through ``prefix`` on the sidecar."""

    name: str
    url: str
    """scheme://host[:port][/base/path], without a trailing slash."""
    prefix: str
    """Path prefix on the sidecar, e.g. ``/twilio``; never ends with ``/`` (except ``/`` itself)."""
    timeout: float
    """Per attempt: until the response head arrives, and the longest silence while streaming the body."""
    connect_timeout: float
    max_request_body: int
    max_connections: int
    ca_bundle: str | None
    """Extra CA certificates (PEM file) trusted for this upstream; the system store is used otherwise."""
    forwarded_headers: bool
    """Send X-Forwarded-For/-Proto/-Host. Off by default: they would tell a third party internal addresses."""
    strip_headers: tuple[str, ...]
    """Request headers (lower case) that the sidecar reads and never sends to this upstream."""
    source: str
    routes: tuple[Route, ...] = ()
    """Tried in order; the first that matches wins."""
    default_route: Route | None = None
    """For requests no route matches; named ``default``."""
    error_format: str = "generic"
    """Shape of the sidecar's own error bodies for this upstream: ``generic``, ``twilio`` or ``google``."""


@dataclass(frozen=True)
class AdminSettings:
    listen: Address
    token: str | None = None
    """Bearer token required for admin mutations; without one they are refused."""


@dataclass(frozen=True)
class StateSettings:
    backend: Literal["memory", "redis"]
    redis_url: str
    redis_timeout: float = 0.05
    """Per Redis command; after a failure the sidecar works on local state until Redis answers again."""
    key_prefix: str = "rp:"
    required: bool = False
    """Readiness fails while Redis is unreachable (otherwise local state serves meanwhile)."""


@dataclass(frozen=True)
class SlackSettings:
    """``alerts.slack``: where breaker and backend alerts go (slack-sdk's AsyncWebClient)."""

    token: str
    channel: str
    base_url: str = "https://slack.com/api/"
    flap_interval: float = 600.0
    """At most one message per breaker per this long; more transitions are summarised after it."""
    error_rate: float = 0.0
    """Alert when an upstream's share of failed requests over ``error_window`` crosses this (0: off)."""
    error_window: float = 300.0
    error_min_requests: int = 20
    webhook_backlog_age: float = 300.0
    """Alert when a webhook's oldest undelivered event is older than this (0: off)."""
    queue_size: int = 100
    """Messages waiting for Slack; past it new ones are dropped (and counted), never the request path."""


@dataclass(frozen=True)
class SentrySettings:
    """``errors.sentry``: error reports, scrubbed of PII before they leave the process."""

    dsn: str
    environment: str = "production"
    release: str | None = None


@dataclass(frozen=True)
class LogSettings:
    level: str
    access: bool


@dataclass(frozen=True)
class Config:
    """Everything one sidecar process runs with."""

    source: str
    listen: Address
    admin: AdminSettings
    state: StateSettings
    org_header: str
    client_ip_header: str | None
    """Where the app says which end user a call is for (first address); the peer address otherwise."""
    policy_files: tuple[str, ...]
    upstreams: tuple[Upstream, ...]
    shutdown_grace: float
    """Longest wait for in-flight requests after SIGTERM/SIGINT before they are cut."""
    log: LogSettings
    slack: SlackSettings | None = None
    sentry: SentrySettings | None = None
    webhooks: tuple[Webhook, ...] = ()
    """Inbound webhooks from every policy file, in file order."""
    webhooks_listen: Address | None = None
    """``webhooks.listen``: the inbound listener (providers call in); None: off."""

    def breakers(self) -> list[tuple[Upstream, Route]]:
        """Every route with a breaker, each upstream's routes before its default route, in file order."""
        return [(upstream, route) for upstream in self.upstreams for route in (*upstream.routes, upstream.default_route)
                if route is not None and route.breaker is not None]
    """None when no DSN is configured: nothing is reported."""
