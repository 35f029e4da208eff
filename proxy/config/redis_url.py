"""``state.redis_url``: one Redis (``redis://``, ``rediss://``, ``unix://``), a master found through
Sentinel (``redis+sentinel://[:password@]host1:26379,host2:26379/MASTER_NAME[/db]``) or a Redis
Cluster found from seed nodes (``redis+cluster://[:password@]host1:6379,host2:6379``).

Parsed here, without I/O, so the config loader refuses a malformed URL at start (file:line:col)
and the Redis client and ``doctor`` read the same fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_PORT = 26379
REDIS_PORT = 6379
_USERINFO = re.compile(r"^(?P<scheme>[^:/]+://)(?P<userinfo>[^@/]*)@")
_SENTINEL_FORM = "redis+sentinel://[:password@]host1:26379,host2:26379/MASTER_NAME[/db]"
_CLUSTER_FORM = "redis+cluster://[:password@]host1:6379,host2:6379"


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """Where the sentinels listen and which master they watch; the password is the master's (and theirs)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    username: str | None
    password: str | None


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """Seed nodes of a Redis Cluster (any reachable one tells the client the whole topology)."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME + "://")


def _userinfo(netloc: str) -> tuple[str, str | None, str | None]:
    """``hosts``, username and password of ``[user[:password]@]hosts``."""
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return hosts, None, None
    user, colon, secret = userinfo.partition(":")
    return hosts, unquote(user) or None, unquote(secret) if colon else None


def cluster_target(url: str) -> ClusterTarget:
    """The fields of a ``redis+cluster://`` URL; ValueError saying what is wrong otherwise."""
    if not is_cluster(url):
        raise ValueError(f"not a {CLUSTER_SCHEME}:// URL")
    netloc, _, path = url[len(CLUSTER_SCHEME) + 3:].partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only db 0, not '/{path.strip('/')}' (write {_CLUSTER_FORM})")
    hosts, username, password = _userinfo(netloc)
    if not hosts:
        raise ValueError(f"no cluster node (write {_CLUSTER_FORM})")
    nodes = tuple(_host_port(entry, REDIS_PORT, "cluster node") for entry in hosts.split(","))
    return ClusterTarget(nodes, username, password)


def sentinel_target(url: str) -> SentinelTarget:
    """The fields of a ``redis+sentinel://`` URL; ValueError saying what is wrong otherwise."""
    rest = url[len(SENTINEL_SCHEME) + 3:] if is_sentinel(url) else None
    if rest is None:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    netloc, _, path = rest.partition("/")
    hosts, username, password = _userinfo(netloc)
    if not hosts:
        raise ValueError(f"no sentinel host (write {_SENTINEL_FORM})")
    sentinels = tuple(_host_port(entry, SENTINEL_PORT, "sentinel") for entry in hosts.split(","))
    master, _, db = path.strip("/").partition("/")
    if not master:
        raise ValueError(f"no master name (write {_SENTINEL_FORM})")
    if db and not db.isdigit():
        raise ValueError(f"invalid db '{db}' (a number, e.g. /mymaster/0)")
    return SentinelTarget(sentinels, unquote(master), int(db or 0), username, password)


def _host_port(entry: str, default_port: int, what: str) -> tuple[str, int]:
    host, colon, port = entry.rpartition(":") if not entry.endswith("]") else (entry, "", "")
    if not colon:
        host, port = entry, str(default_port)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError(f"empty {what} host in '{entry}' (write host:port)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid {what} port '{port}' in '{entry}' (1-65535)")
    return host, int(port)


def redis_url(value: Any) -> str:
    """The config value parser: a known scheme, and a well-formed Sentinel URL."""
    text = value.strip() if isinstance(value, str) else ""
    scheme = text.partition("://")[0]
    if is_sentinel(text):
        sentinel_target(text)
    elif is_cluster(text):
        cluster_target(text)
    elif scheme not in SINGLE_SCHEMES or "://" not in text:
        raise ValueError(f"invalid Redis URL (write redis://host:port/db, rediss://..., unix://path, "
                         f"{_SENTINEL_FORM} or {_CLUSTER_FORM})")
    return text


def without_password(url: str) -> str:
    """The URL for log lines: a password in ``redis://user:secret@host`` never reaches a log."""
    match = _USERINFO.match(url)
    if match is None or ":" not in match["userinfo"]:
        return url
    user = match["userinfo"].partition(":")[0]
    return f"{match['scheme']}{user}:***@{url[match.end():]}"
