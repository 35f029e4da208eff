"""Which bucket of a limit a request spends: its key value, read from the request's facts.

Pure: the web layer hands over headers, the peer address and the route's path captures.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from proxy.config.policy_values import KeyKind, LimitPolicy

MAX_KEY = 128
"""Longer key values are stored as a digest: a bucket name must stay small, whatever a header holds."""


_NO_CAPTURES: Mapping[str, str] = MappingProxyType({})


class RequestFacts(NamedTuple):
    """What the key of any limit can be read from (a named tuple: every limited request makes one)."""

    headers: Mapping[str, str]
    """Case-insensitive, as aiohttp's headers are."""
    peer: str | None
    captures: Mapping[str, str] = _NO_CAPTURES
    org_header: str = "X-Org-Id"
    client_ip_header: str | None = "X-Forwarded-For"


def key_value(limit: LimitPolicy, facts: RequestFacts) -> str | None:
    """The request's value of ``limit``'s key; None when the request does not carry it."""
    kind = limit.kind
    if kind == KeyKind.GLOBAL:
        return "global"
    if kind == KeyKind.ORG:
        value = facts.headers.get(facts.org_header)
    elif kind == KeyKind.HEADER:
        value = facts.headers.get(limit.key_name)
    elif kind == KeyKind.PATH:
        value = facts.captures.get(limit.key_name)
    elif kind == KeyKind.BASIC_AUTH_USER:
        value = basic_auth_user(facts.headers.get("Authorization"))
    else:
        value = client_ip(facts)
    value = value.strip() if value else None
    return bounded(value) if value else None


def client_ip(facts: RequestFacts) -> str | None:
    """The first address of the client IP header (the app names its end user), else the peer."""
    if facts.client_ip_header:
        forwarded = facts.headers.get(facts.client_ip_header)
        if forwarded:
            first = forwarded.split(",", 1)[0].strip()
            if first:
                return first
    return facts.peer


def basic_auth_user(authorization: str | None) -> str | None:
    """The user of ``Authorization: Basic`` (Twilio's AccountSid or API key SID)."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text ("string argument should
        return None     # contain only ASCII characters"): a client's header, whatever it holds
    user, _, _ = decoded.partition(":")
    return user or None


def bounded(value: str) -> str:
    if len(value) <= MAX_KEY and value.isprintable():
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
