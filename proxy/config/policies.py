"""The policy parts of an upstream: its routes, their breakers, retries and what counts as a failure.

Routes inherit the upstream's settings and override only the keys they name, as resilience4j
instances override their base config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from proxy.config import values as v
from proxy.config.limits import path_captures, read_limits
from proxy.config.model import DEFAULT_ROUTE, Route
from proxy.config.policy_values import CONDITIONS, BreakerPolicy, RetryPolicy
from proxy.config.reader import Section

DEFAULT_FAILURE_STATUSES = frozenset(range(500, 600))
TOO_MANY_REQUESTS = 429


def _whole_seconds(value: Any) -> int:
    seconds = v.duration(value)
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"must be whole seconds >= 1s, not '{value}'")
    return int(seconds)


def _positive_duration(value: Any) -> float:
    seconds = v.duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, not '{value}'")
    return seconds


_BREAKER_FIELDS = {
    "consecutive_failures": v.non_negative_int,
    "failure_rate": v.fraction,
    "window": _whole_seconds,
    "min_calls": v.positive_int,
    "slow_call": v.duration,
    "open_for": _positive_duration,
    "open_for_max": v.duration,
    "open_multiplier": v.number_at_least_one,
    "jitter": v.fraction,
    "half_open_probes": v.positive_int,
}


def read_breaker(parent: Section, base: BreakerPolicy | None) -> BreakerPolicy | None:
    """``breaker:`` under an upstream or route: ``false`` turns it off; a mapping overrides ``base``."""
    node = parent.node("breaker")
    if node is None:
        return base
    if node.value is False:
        return None
    section = parent.section("breaker")
    overrides = {name: section.get(name, parse, None) for name, parse in _BREAKER_FIELDS.items()}
    section.finish()
    policy = dataclasses.replace(base or BreakerPolicy(), **{k: val for k, val in overrides.items() if val is not None})
    if not policy.consecutive_failures and not policy.failure_rate:
        section.error(section.at, section.path,
                      "no trip condition: set consecutive_failures or failure_rate (or write breaker: false)")
    if policy.open_for_max and policy.open_for_max < policy.open_for:
        section.error(section.mark_of("open_for_max"), f"{section.path}.open_for_max",
                      f"must be at least open_for ({policy.open_for:g}s)")
    return policy


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"invalid status '{value}'")
    return value


def _retry_condition(value: Any) -> str | int:
    if isinstance(value, str) and value in CONDITIONS:
        return value
    try:
        return _status(value)
    except ValueError:
        raise ValueError(f"invalid retry condition '{value}' (one of {', '.join(sorted(CONDITIONS))}, or a status)") from None


def read_retry(parent: Section, base: RetryPolicy) -> RetryPolicy:
    """``retry:`` under an upstream or route: ``false`` means no retries; a mapping overrides ``base``."""
    node = parent.node("retry")
    if node is None:
        return base
    if node.value is False:
        return dataclasses.replace(base, attempts=0)
    section = parent.section("retry")
    backoff = section.section("backoff")
    budget = section.section("budget")
    fields = {
        "attempts": section.get("attempts", v.non_negative_int, None),
        "initial": backoff.get("initial", v.duration, None),
        "multiplier": backoff.get("multiplier", v.number_at_least_one, None),
        "max_backoff": backoff.get("max", v.duration, None),
        "jitter": backoff.get("jitter", v.fraction, None),
        "on": frozenset(section.list_of("on", _retry_condition)) if section.has("on") else None,
        "deadline": section.get("deadline", _positive_duration, None),
        "per_try_timeout": section.get("per_try_timeout", _positive_duration, None),
        "retry_after_max": section.get("retry_after_max", v.duration, None),
        "idempotent": section.get("idempotent", v.boolean, None),
        "not_processed": frozenset(section.list_of("not_processed", _status))
        if section.has("not_processed") else None,
        "idempotency_header": section.get("idempotency_header", v.header_name, None),
        "idempotent_when_body_has": section.get("idempotent_when_body_has", v.text, None),
        "on_duplicate": section.get("on_duplicate", v.one_of("relay", "fetch"), None),
        "budget_ratio": budget.get("ratio", _budget_ratio, None),
        "budget_min_per_second": budget.get("min_per_second", _non_negative_number, None),
        "replay_limit": section.get("replay_limit", v.size, None),
    }
    for nested in (backoff, budget, section):
        nested.finish()
    policy = dataclasses.replace(base, **{k: val for k, val in fields.items() if val is not None})
    if policy.on_duplicate == "fetch" and not policy.idempotent_when_body_has:
        section.error(section.mark_of("on_duplicate"), f"{section.path}.on_duplicate",
                      "fetch needs idempotent_when_body_has (the body field naming the resource)")
    if policy.max_backoff < policy.initial:
        backoff.error(backoff.mark_of("max"), f"{backoff.path}.max", f"must be at least initial ({policy.initial:g}s)")
    return policy


def _budget_ratio(value: Any) -> float:
    """Retries as a share of first tries; over 100% retries could more than double a failing upstream's load."""
    try:
        return v.fraction(value)
    except ValueError:
        text = value.strip() if isinstance(value, str) else ""
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(value) if not isinstance(
                value, bool) and isinstance(value, (int, float)) else 0.0
        except ValueError:
            number = 0.0
        if number > 1:
            raise ValueError(f"a retry budget over 100% ('{value}') lets retries more than double the load on a "
                             "failing upstream: write at most 100% (e.g. 20%)") from None
        raise


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"must be a number >= 0, not '{value}'")
    return float(value)


def read_failure_statuses(parent: Section, base: frozenset[int]) -> frozenset[int]:
    node = parent.node("failure_statuses")
    if node is None:
        return base
    entries = parent.list_of("failure_statuses", v.status_set)
    if any(entry == frozenset({TOO_MANY_REQUESTS}) for entry in entries):
        parent.error(parent.mark_of("failure_statuses"), f"{parent.path}.failure_statuses",
                     "429 is a rate-limit signal, never a breaker failure")
    return frozenset().union(*entries) - {TOO_MANY_REQUESTS}


def read_routes(upstream: Section) -> tuple[tuple[Route, ...], Route]:
    """The upstream's routes in order, and its default route, each with its resolved policies."""
    breaker = read_breaker(upstream, BreakerPolicy())
    failures = read_failure_statuses(upstream, DEFAULT_FAILURE_STATUSES)
    retry = read_retry(upstream, RetryPolicy())
    default = Route(DEFAULT_ROUTE, None, None, (), breaker, failures, retry)
    routes: list[Route] = []
    names: set[str] = set()
    limit_names: set[str] = set()
    for section in upstream.sections_of("routes"):
        name = section.get("name", v.text)
        if name in names or name == DEFAULT_ROUTE:
            section.error(section.mark_of("name"), f"{section.path}.name",
                          f"'{name}' is already a route of this upstream" if name in names
                          else f"'{DEFAULT_ROUTE}' is the name of the route for unmatched requests")
        names.add(name)
        methods = section.list_of("methods", v.method)
        body = section.section("body")
        body_match = tuple((field, body.get(field, v.text)) for field in sorted(body.explicit()))
        body.finish()
        path = section.get("path", v.path_pattern, None)
        routes.append(Route(
            name=name,
            methods=frozenset(methods) if methods else None,
            path=path,
            body=body_match,
            breaker=read_breaker(section, breaker),
            failure_statuses=read_failure_statuses(section, failures),
            retry=read_retry(section, retry),
            rate_limits=read_limits(section, path_captures(path), "this route's path", limit_names),
        ))
        section.finish()
    shared = read_limits(upstream, frozenset().union(*(path_captures(r.path) for r in routes)),
                         "the path of any route of this upstream", limit_names)
    routes = [dataclasses.replace(r, rate_limits=shared + r.rate_limits) for r in routes]
    return tuple(routes), dataclasses.replace(default, rate_limits=shared)

