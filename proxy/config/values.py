"""Parsers for the value types users write in YAML. Each raises ValueError with a message
that can follow ``file:line:col: key.path:``."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from proxy.config.model import Address

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 10**3, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _shown(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def duration(value: Any) -> float:
    """``250ms``, ``30s``, ``15m``, ``1h``, ``7d`` or a sum such as ``1m30s``, in seconds. A bare number is refused:
    nobody can tell whether ``30`` meant seconds or milliseconds."""
    text = value.strip() if isinstance(value, str) else None
    if text and _DURATION_PART.sub("", text) == "":
        return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    raise ValueError(f"invalid duration '{_shown(value)}' (write 250ms, 30s, 15m or 1h)")


def size(value: Any) -> int:
    """``1MiB``, ``512KiB``, ``10MB`` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"invalid size '{_shown(value)}' (write 1048576, 512KiB or 10MiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def address(value: Any) -> Address:
    """``host:port`` or ``[ipv6]:port``; port 0 picks a free port (tests, benchmarks)."""
    text = value.strip() if isinstance(value, str) else ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid address '{_shown(value)}' (write host:port, e.g. 127.0.0.1:8080)")
    return Address(host, int(port))


def upstream_url(value: Any) -> str:
    """An http(s) origin with an optional base path, normalised without a trailing slash."""
    text = value.strip() if isinstance(value, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid url '{_shown(value)}' (write https://host[:port][/base/path])")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"invalid url '{text}': no query, fragment or credentials allowed")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"invalid url '{text}': bad port") from None
    return text.rstrip("/")


def prefix(value: Any) -> str:
    """A path prefix such as ``/twilio``: begins with ``/``, no query, no trailing ``/``."""
    text = value.strip() if isinstance(value, str) else ""
    if not text.startswith("/") or "?" in text or "#" in text or "//" in text or " " in text:
        raise ValueError(f"invalid prefix '{_shown(value)}' (write a path such as /twilio)")
    return text.rstrip("/") or "/"


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_PATTERN_SEGMENT = re.compile(r"\*\*?|(?:\{[A-Za-z_][A-Za-z0-9_]*\}|[^{}*/])+")


def fraction(value: Any) -> float:
    """``50%`` or ``0.5``: a share between 0 and 1."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100
        except ValueError:
            number = -1.0
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"invalid share '{_shown(value)}' (write 50% or 0.5)")
    return number


def non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number >= 0, not '{_shown(value)}'")
    return value


def number_at_least_one(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
        raise ValueError(f"must be a number >= 1, not '{_shown(value)}'")
    return float(value)


def method(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in _METHODS:
        raise ValueError(f"unknown HTTP method '{_shown(value)}' (one of {', '.join(sorted(_METHODS))})")
    return value.upper()


def status_set(value: Any) -> frozenset[int]:
    """One status list entry: ``503`` or a class such as ``5xx``."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return frozenset({value})
    if isinstance(value, str) and re.fullmatch(r"[1-5]xx", value.strip().lower()):
        first = int(value.strip()[0]) * 100
        return frozenset(range(first, first + 100))
    raise ValueError(f"invalid status '{_shown(value)}' (write 503 or 5xx)")


def path_pattern(value: Any) -> str:
    """``/2010-04-01/Accounts/{account}/Messages/{sid}.json``: literals with ``{name}`` captures in a segment,
    ``*`` for one whole segment, a final ``**`` for the rest. Capture names are unique."""
    text = value.strip() if isinstance(value, str) else ""
    segments = text.split("/")[1:]
    if not text.startswith("/") or "?" in text:
        raise ValueError(f"invalid path pattern '{_shown(value)}' (write /literal/{{name}}/*)")
    for index, segment in enumerate(segments):
        if segment and not _PATTERN_SEGMENT.fullmatch(segment):
            raise ValueError(f"invalid path pattern '{text}': bad segment '{segment}' (* must be a whole segment, "
                             "{name} a Python-style name)")
        if segment == "**" and index != len(segments) - 1:
            raise ValueError(f"invalid path pattern '{text}': ** may only end a pattern")
    names = re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", text)
    if len(names) != len(set(names)):
        raise ValueError(f"invalid path pattern '{text}': a capture name is used twice")
    return text


def header_name(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"invalid header name '{_shown(value)}'")
    return value


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a whole number >= 1, not '{_shown(value)}'")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not '{_shown(value)}'")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, not '{_shown(value)}'")
    return value


def one_of(*choices: str):  # type: ignore[no-untyped-def]
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not '{_shown(value)}'")
        return value

    return parse


def sentry_dsn(value: Any) -> str:
    """``https://<key>@<host>[:port]/<project>``: the DSN shape sentry-sdk accepts."""
    text = value.strip() if isinstance(value, str) else ""
    parts = urlsplit(text)
    project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    if parts.scheme not in ("http", "https") or not parts.username or not parts.hostname or not project.isdigit():
        raise ValueError("invalid Sentry DSN (write https://<key>@<host>/<project id>)")
    return text
