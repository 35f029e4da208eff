"""Where a request goes: the upstream (longest prefix of the raw target), then its route.

The target is never decoded: Google percent-encodes calendar ids in the path
(``team%20cal%40example.com``) and signatures such as Twilio's cover the exact bytes,
so the rest of the path and the query travel to the upstream byte for byte.

Route patterns match the raw (still percent-encoded) path after the upstream's prefix, segment by
segment (``{name}`` captures within one segment, ``*`` is one whole segment, a final ``**`` the
rest); captures stay raw too. Body conditions are only evaluated when the method
and path already match, so only those requests pay for reading the body (see ``needs_body``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from proxy.config.model import Route, Upstream
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


BODY_LIMIT = 64 * 1024
"""Bodies larger than this are not inspected: body conditions then do not match."""


_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``/Accounts/{account}/Messages/{sid}.json`` -> a regex with one named group per capture."""
    parts = []
    for segment in pattern.split("/")[1:]:
        if segment == "**":
            parts.append("(?:/.*)?")
        elif segment == "*":
            parts.append("/[^/]+")
        else:
            pieces, last = [], 0
            for capture in _CAPTURE.finditer(segment):
                pieces.append(re.escape(segment[last:capture.start()]))
                pieces.append(f"(?P<{capture.group(1)}>[^/]+?)")
                last = capture.end()
            pieces.append(re.escape(segment[last:]))
            parts.append("/" + "".join(pieces))
    return re.compile("".join(parts) or "/?")


class _CompiledRoute:
    def __init__(self, route: Route) -> None:
        self.route = route
        self.pattern = compile_pattern(route.path) if route.path else None

    def head_matches(self, method: str, path: str) -> dict[str, str] | None:
        if self.route.methods is not None and method not in self.route.methods:
            return None
        if self.pattern is None:
            return {}
        match = self.pattern.fullmatch(path)
        return match.groupdict() if match else None


class RouteTable:
    """The routes of one upstream, compiled once."""

    def __init__(self, upstream: Upstream) -> None:
        assert upstream.default_route is not None
        self.default = upstream.default_route
        self._routes = [_CompiledRoute(route) for route in upstream.routes]
        self.has_routes = bool(self._routes)
        self._body_routes = any(route.body for route in upstream.routes)

    def by_head(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        """The route and its captures when the request's method and path decide it: what :meth:`match`
        gives without a body. ``(None, {})`` when a body condition may decide (:meth:`needs_body`):
        then read the body and :meth:`match` with its fields. One pass, for the usual request."""
        first: tuple[Route, dict[str, str]] | None = None
        for compiled in self._routes:
            captures = compiled.head_matches(method, path)
            if captures is None:
                continue
            if compiled.route.body:
                return None, {}
            if first is None:
                first = compiled.route, captures
                if not self._body_routes:
                    break
        return first or (self.default, {})

    def needs_body(self, method: str, path: str) -> bool:
        """Whether deciding the route for this request means reading its body first."""
        return self._body_routes and any(
            r.route.body and r.head_matches(method, path) is not None for r in self._routes
        )

    def match(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[Route, dict[str, str]]:
        """The first matching route and its captures; the default route when none matches."""
        for compiled in self._routes:
            captures = compiled.head_matches(method, path)
            if captures is None:
                continue
            if compiled.route.body and not _body_matches(compiled.route.body, body):
                continue
            return compiled.route, captures
        return self.default, {}


def _body_matches(conditions: tuple[tuple[str, str], ...], body: Mapping[str, Any] | None) -> bool:
    if body is None:
        return False
    for field, glob in conditions:
        value = body.get(field)
        if not isinstance(value, str) or not fnmatchcase(value, glob):
            return False
    return True


def parse_body_fields(content_type: str, data: bytes) -> Mapping[str, Any] | None:
    """Top-level fields of a form-encoded or JSON body; None for anything else or anything unreadable."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        if media == "application/x-www-form-urlencoded":
            return dict(parse_qsl(data.decode("utf-8"), keep_blank_values=True))
        if media == "application/json" or media.endswith("+json"):
            parsed = json.loads(data)
            return parsed if isinstance(parsed, dict) else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack allows
        return None
    return None
