"""``rate_limits:`` under an upstream or a route, read into :class:`~proxy.policy.ratelimit.LimitPolicy`.

Limits on the upstream apply to every request to it; limits on a route apply to that route
only, on top. Names are unique per upstream, because a name is half of a bucket's identity.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.config import values as v
from proxy.config.policy_values import BackendError, KeyKind, LimitPolicy, MissingKey, Rate
from proxy.config.reader import Section

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KEYS = "org, ip, global, basic_auth_user, header:<Name> or path:<capture>"


def limit_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"invalid limit name '{value}' (letters, digits, '-', '_', '.'; at most 64)")
    return value


def limit_key(value: Any) -> tuple[KeyKind, str]:
    """``org``, ``ip``, ``global``, ``basic_auth_user``, ``header:X-Tenant`` or ``path:calendarId``."""
    text = value.strip() if isinstance(value, str) else ""
    kind, _, name = text.partition(":")
    try:
        parsed = KeyKind(kind)
    except ValueError:
        raise ValueError(f"invalid key '{value}' (one of {_KEYS})") from None
    if parsed == KeyKind.HEADER:
        return parsed, v.header_name(name)
    if parsed == KeyKind.PATH:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"invalid key '{value}': path: takes a capture name from a route's path, e.g. "
                             "path:calendarId for {calendarId}")
        return parsed, name
    if name:
        raise ValueError(f"invalid key '{value}' (one of {_KEYS})")
    return parsed, ""


def _positive_duration(value: Any) -> float:
    seconds = v.duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, not '{value}'")
    return seconds


def _share(value: Any) -> float:
    share = v.fraction(value)
    if share <= 0:
        raise ValueError(f"must be more than 0, not '{value}'")
    return share


def read_limits(parent: Section, captures: frozenset[str], where: str, taken: set[str]) -> tuple[LimitPolicy, ...]:
    """The ``rate_limits`` list of an upstream or a route.

    ``captures`` are the path captures a ``path:`` key may name (``where`` says whose, for the error):
    the route's own, or on the upstream those of any of its routes (requests through the other
    routes then lack the key, and ``on_missing_key`` decides). ``taken`` collects the upstream's
    limit names so far: a name is half of a bucket's identity, so two limits may not share one.
    """
    limits: list[LimitPolicy] = []
    for section in parent.sections_of("rate_limits"):
        limit = _read_limit(section, captures, where)
        if limit is not None and limit.name in taken:
            section.error(section.mark_of("name"), f"{section.path}.name",
                          f"'{limit.name}' is already the name of a limit of this upstream")
        elif limit is not None:
            taken.add(limit.name)
            limits.append(limit)
        section.finish()
    return tuple(limits)


def _read_limit(s: Section, captures: frozenset[str], where: str) -> LimitPolicy | None:
    name = s.get("name", limit_name)
    key = s.get("key", limit_key)
    amount = s.get("limit", v.positive_int)
    per = s.get("per", _positive_duration)
    burst = s.get("burst", v.non_negative_int, None)
    shadow = s.get("shadow", v.boolean, False)
    on_backend_error = s.get("on_backend_error", _enum(BackendError), BackendError.ALLOW)
    local_share = s.get("local_share", _share, 0.0)
    on_missing_key = s.get("on_missing_key", _enum(MissingKey), MissingKey.ANONYMOUS)
    honor = s.get("honor_upstream_retry_after", v.boolean, True)
    overrides = _read_overrides(s, per, burst)
    if None in (name, key, amount, per):
        return None
    kind, key_name = key
    if kind == KeyKind.PATH and key_name not in captures:
        s.error(s.mark_of("key"), f"{s.path}.key", f"no {{{key_name}}} capture in {where}")
    if local_share and on_backend_error == BackendError.DENY:
        s.error(s.mark_of("local_share"), f"{s.path}.local_share",
                "only applies with on_backend_error: allow (deny rejects every call while the backend is down)")
    return LimitPolicy(
        name=name, kind=kind, key_name=key_name, rate=_rate(amount, per, burst), shadow=shadow,
        on_backend_error=on_backend_error, local_share=local_share, on_missing_key=on_missing_key,
        overrides=overrides, honor_upstream_retry_after=honor,
    )


def _rate(amount: int, per: float, burst: int | None) -> Rate:
    """By default a fresh bucket may spend its whole amount at once: a quota per hour should allow
    a batch of calls, not one call every 3.6 s."""
    return Rate(amount, per, amount - 1 if burst is None else burst)


def _read_overrides(s: Section, per: float | None, burst: int | None) -> tuple[tuple[str, Rate], ...]:
    """``overrides: {acme: 5000}`` or ``{acme: {limit: 5000, per: 1h, burst: 100}}``."""
    node = s.node("overrides")
    if node is None:
        return ()
    outer = s.section("overrides")
    found: list[tuple[str, Rate]] = []
    for value in sorted(outer.explicit()):
        entry = outer.node(value)
        assert entry is not None
        if isinstance(entry.value, dict):
            inner = outer.section(value)
            amount = inner.get("limit", v.positive_int)
            entry_per = inner.get("per", _positive_duration, per)
            entry_burst = inner.get("burst", v.non_negative_int, burst)
            inner.finish()
        else:
            amount = outer.get(value, v.positive_int)
            entry_per, entry_burst = per, burst
        if amount is not None and entry_per is not None:
            found.append((value, _rate(amount, entry_per, entry_burst)))
    return tuple(found)


def _enum(kind):  # type: ignore[no-untyped-def]
    def parse(value: Any):  # type: ignore[no-untyped-def]
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"must be one of {', '.join(m.value for m in kind)}, not '{value}'") from None

    return parse


def path_captures(pattern: str | None) -> frozenset[str]:
    return frozenset(_CAPTURE.findall(pattern or ""))
