"""Which upstream a request goes to, decided on the raw request target.

The target is never decoded: Google percent-encodes calendar ids in the path
(``team%20cal%40example.com``) and signatures such as Twilio's cover the exact bytes,
so the rest of the path and the query travel to the upstream byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from proxy.config.model import Upstream
from proxy.errors import NoRoute, NotAProxyTarget

_DOT_SEGMENT = re.compile(r"/(?:\.|%2e){1,2}(?:/|\?|$)", re.IGNORECASE)


class Resolved(NamedTuple):
    upstream: Upstream
    url: str
    """Where to send it: the upstream's URL plus the rest of the target, still percent-encoded."""
    path: str
    """The rest of the path after the prefix, without the query: what route patterns match."""


class Router:
    """Longest-prefix match of the request target against the upstreams' prefixes."""

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        table = [("" if u.prefix == "/" else u.prefix, u) for u in upstreams]
        self._table = sorted(table, key=lambda entry: len(entry[0]), reverse=True)

    def resolve(self, method: str, target: str) -> Resolved:
        """The upstream for ``target`` and the upstream URL to send it to.

        Raises NotAProxyTarget for CONNECT and absolute-form targets (this is not a forward
        proxy), and for dot segments that would climb out of the upstream's base path.
        """
        if method == "CONNECT":
            raise NotAProxyTarget("CONNECT is not supported: this is not a forward proxy", status=405)
        if not target.startswith("/"):
            raise NotAProxyTarget("only origin-form request targets (/path?query) are accepted: this is not a forward proxy")
        path_end = target.find("?")
        path = target if path_end < 0 else target[:path_end]
        if ("/." in path or "%2" in path) and _DOT_SEGMENT.search(path):
            raise NotAProxyTarget("dot segments (/./ or /../) are not allowed in the path")
        for prefix, upstream in self._table:
            if target.startswith(prefix):
                rest = target[len(prefix):]
                if not rest or rest[0] in "/?":
                    return Resolved(upstream, upstream.url + rest, path[len(prefix):] or "/")
        raise NoRoute(f"no upstream is configured for path {path[:200]!r}")
