"""Typed, immutable configuration values: what the rest of the sidecar reads.

Built once by :mod:`proxy.config.load`; nothing here does I/O or validation.
Durations are seconds (float) and sizes are bytes (int).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Address:
    """A host and port to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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


@dataclass(frozen=True)
class AdminSettings:
    listen: Address


@dataclass(frozen=True)
class StateSettings:
    backend: Literal["memory", "redis"]
    redis_url: str


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
    policy_files: tuple[str, ...]
    upstreams: tuple[Upstream, ...]
    shutdown_grace: float
    """Longest wait for in-flight requests after SIGTERM/SIGINT before they are cut."""
    log: LogSettings
