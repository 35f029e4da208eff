"""``state.redis_url``: one Redis (``redis://``, ``rediss://``, ``unix://``) or a master found through
Sentinel (``redis+sentinel://[:password@]host1:26379,host2:26379/MASTER_NAME[/db]``).

Parsed here, without I/O, so the config loader refuses a malformed URL at start (file:line:col)
and the Redis client and ``doctor`` read the same fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

SENTINEL_SCHEME = "redis+sentinel"
SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_PORT = 26379
_USERINFO = re.compile(r"^(?P<scheme>[^:/]+://)(?P<userinfo>[^@/]*)@")
_SENTINEL_FORM = "redis+sentinel://[:password@]host1:26379,host2:26379/MASTER_NAME[/db]"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """Where the sentinels listen and which master they watch; the password is the master's (and theirs)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def sentinel_target(url: str) -> SentinelTarget:
    """The fields of a ``redis+sentinel://`` URL; ValueError saying what is wrong otherwise."""
    rest = url[len(SENTINEL_SCHEME) + 3:] if is_sentinel(url) else None
    if rest is None:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ValueError(f"no sentinel host (write {_SENTINEL_FORM})")
    sentinels = tuple(_host_port(entry) for entry in hosts.split(","))
    master, _, db = path.strip("/").partition("/")
    if not master:
        raise ValueError(f"no master name (write {_SENTINEL_FORM})")
    if db and not db.isdigit():
        raise ValueError(f"invalid db '{db}' (a number, e.g. /mymaster/0)")
    return SentinelTarget(sentinels, unquote(master), int(db or 0), username, password)


def _host_port(entry: str) -> tuple[str, int]:
    host, colon, port = entry.rpartition(":") if not entry.endswith("]") else (entry, "", "")
    if not colon:
        host, port = entry, str(SENTINEL_PORT)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError(f"empty sentinel host in '{entry}' (write host:port)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid sentinel port '{port}' in '{entry}' (1-65535)")
    return host, int(port)


def redis_url(value: Any) -> str:
    """The config value parser: a known scheme, and a well-formed Sentinel URL."""
    text = value.strip() if isinstance(value, str) else ""
    scheme = text.partition("://")[0]
    if is_sentinel(text):
        sentinel_target(text)
    elif scheme not in SINGLE_SCHEMES or "://" not in text:
        raise ValueError(f"invalid Redis URL (write redis://host:port/db, rediss://..., unix://path "
                         f"or {_SENTINEL_FORM})")
    return text


def without_password(url: str) -> str:
    """The URL for log lines: a password in ``redis://user:secret@host`` never reaches a log."""
    match = _USERINFO.match(url)
    if match is None or ":" not in match["userinfo"]:
        return url
    user = match["userinfo"].partition(":")[0]
    return f"{match['scheme']}{user}:***@{url[match.end():]}"
