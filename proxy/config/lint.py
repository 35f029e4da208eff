"""Semantic checks of a loaded config: what parses but cannot do what its author meant.

The loader refuses what is malformed; this module looks at a valid :class:`~proxy.config.model.Config`
as a whole, as ``resilience-proxy validate`` and ``doctor`` show it (``run`` does not lint):

- a route that can never match (an earlier route without a body condition takes all its requests): ERROR,
  because its breaker, retries and limits silently never apply;
- a rate limit that never decides (another enforcing limit on the same key of the same requests, missing
  keys and a Redis outage handled alike, is at least as tight in both rate and burst), or a duplicate:
  WARNING, it is only dead weight;
- a retry deadline shorter than one attempt: WARNING, a first attempt that times out leaves no time to retry;
- a webhook without ``webhooks.listen`` (never receives a request), ``provider: none`` on a listener other
  hosts can reach (anyone can queue events for the app), a Twilio ``mode: sync`` webhook whose delivery
  timeout is 15 s or more (Twilio stops waiting first): WARNING.

Pure: the YAML trees are passed in (they carry the line and column of each key), no file is read here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Union

from proxy.config.model import Config, Route, Upstream
from proxy.config.policy_values import LimitPolicy, Rate
from proxy.config.yamltree import Mark, YNode
from proxy.errors import ERROR, WARNING, Problem

Step = Union[str, int]
_CAPTURE = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def lint(config: Config, trees: Mapping[str, YNode]) -> list[Problem]:
    """Every semantic problem of ``config``, errors first; ``trees`` maps each policy file to its YAML."""
    problems: list[Problem] = []
    for upstream in config.upstreams:
        tree = trees.get(upstream.source)
        if tree is None:
            continue
        where = _Locator(upstream.source, tree, ("upstreams", upstream.name))
        problems.extend(_unreachable_routes(upstream, where))
        problems.extend(_shadowed_limits(upstream, where))
        problems.extend(_short_deadlines(upstream, where))
    problems.extend(_webhooks(config, trees))
    return sorted(problems, key=lambda p: p.severity != ERROR)


class _Locator:
    """Finds the mark of a key path under one upstream, as the loader's Section would name it."""

    def __init__(self, file: str, root: YNode, base: tuple[Step, ...]) -> None:
        self.file, self.root, self.base = file, root, base

    def problem(self, steps: tuple[Step, ...], message: str, severity: str) -> Problem:
        steps = self.base + steps
        mark = self._mark(steps)
        path = ""
        for step in steps:
            path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else step)
        return Problem(mark.file, mark.line, mark.column, path, message, severity)

    def has(self, *steps: Step) -> bool:
        return self._node(self.base + steps) is not None

    def node(self, *steps: Step) -> YNode | None:
        """The YAML node at ``steps`` below the upstream, if written."""
        return self._node(self.base + steps)

    def _node(self, steps: tuple[Step, ...]) -> YNode | None:
        node: YNode | None = self.root
        for step in steps:
            value = node.value if node is not None else None
            if isinstance(step, int):
                node = value[step] if isinstance(value, list) and step < len(value) else None
            else:
                node = value.get(step) if isinstance(value, dict) else None
        return node

    def _mark(self, steps: tuple[Step, ...]) -> Mark:
        for end in range(len(steps), 0, -1):
            parent, last = self._node(steps[:end - 1]), steps[end - 1]
            if parent is None:
                continue
            if isinstance(last, int) and isinstance(parent.value, list) and last < len(parent.value):
                return parent.value[last].mark
            if isinstance(last, str) and isinstance(parent.value, dict) and last in parent.key_marks:
                return parent.key_marks[last]
        return Mark(self.file, 0, 0)


# Routes ---------------------------------------------------------------------------------------------------

def _unreachable_routes(upstream: Upstream, where: _Locator) -> Iterator[Problem]:
    for later_index, later in enumerate(upstream.routes):
        for index, earlier in enumerate(upstream.routes[:later_index]):
            if not earlier.body and _methods_cover(earlier, later) and _path_covers(earlier.path, later.path):
                yield where.problem(("routes", later_index), f"route '{later.name}' can never match: route "
                                    f"'{earlier.name}' (routes[{index}]) takes every request it would", ERROR)
                break


def _methods_cover(earlier: Route, later: Route) -> bool:
    if earlier.methods is None:
        return True
    return later.methods is not None and later.methods <= earlier.methods


def _segment(text: str) -> str:
    """A pattern segment with captures made anonymous: ``{sid}.json`` -> ``{}.json``; a lone capture is ``*``."""
    anonymous = _CAPTURE.sub("{}", text)
    return "*" if anonymous == "{}" else anonymous


def _path_covers(earlier: str | None, later: str | None) -> bool:
    """Whether every path ``later`` matches is matched by ``earlier`` (conservative: False when unsure)."""
    if earlier is None:
        return True
    if later is None:
        return earlier.split("/")[1:] == ["**"]
    outer = [_segment(s) for s in earlier.split("/")[1:]]
    inner = [_segment(s) for s in later.split("/")[1:]]
    for position, segment in enumerate(outer):
        if segment == "**":
            return True
        if position >= len(inner):
            return False
        other = inner[position]
        if segment == "*" and other not in ("", "**"):
            continue
        if segment != other:
            return False
    return len(outer) == len(inner)


# Rate limits ----------------------------------------------------------------------------------------------

def _shadowed_limits(upstream: Upstream, where: _Locator) -> Iterator[Problem]:
    """Pairs of enforcing limits on the same key that every request through a route must pass."""
    reported: set[tuple[str, str]] = set()
    routes = (upstream.default_route, *upstream.routes) if upstream.default_route else upstream.routes
    for route in routes:
        enforcing = [limit for limit in route.rate_limits if not limit.shadow and not limit.overrides]
        for index, first in enumerate(enforcing):
            for second in enforcing[index + 1:]:
                if _behaviour(first) != _behaviour(second):
                    continue
                if (first.name, second.name) in reported:
                    continue
                problem = _compare(first, second, upstream, where)
                if problem is not None:
                    reported.add((first.name, second.name))
                    yield problem


def _behaviour(limit: LimitPolicy) -> tuple[object, ...]:
    """Limits compare only when they count the same thing the same way: a tight limit that skips requests
    without the key, or lets calls through while Redis is down, leaves those to the looser one."""
    return limit.kind, limit.key_name, limit.on_missing_key, limit.on_backend_error, limit.local_share


def _at_most(a: Rate, b: Rate) -> bool:
    """``a`` is at least as tight as ``b``: no faster a pace (limit/per, compared exactly), no bigger a burst."""
    return a.limit * b.per <= b.limit * a.per and a.burst <= b.burst


def _compare(first: LimitPolicy, second: LimitPolicy, upstream: Upstream, where: _Locator) -> Problem | None:
    key = f"{first.kind.value}:{first.key_name}" if first.key_name else first.kind.value
    if _at_most(first.rate, second.rate) and _at_most(second.rate, first.rate):
        return where.problem(_limit_steps(upstream, second.name, where),
                             f"limit '{second.name}' duplicates '{first.name}' (same key {key}, same rate and burst)",
                             WARNING)
    for tight, loose in ((first, second), (second, first)):
        if _at_most(tight.rate, loose.rate):
            return where.problem(
                _limit_steps(upstream, loose.name, where),
                f"limit '{loose.name}' ({_rate(loose.rate)}) never decides: '{tight.name}' on the same key {key} "
                f"is at least as tight in both rate and burst ({_rate(tight.rate)})", WARNING)
    return None


def _rate(rate: Rate) -> str:
    return f"{rate.limit} per {_seconds(rate.per)}, burst {rate.burst}"


def _limit_steps(upstream: Upstream, name: str, where: _Locator) -> tuple[Step, ...]:
    """Where the limit called ``name`` is written: on the upstream or on one of its routes (names are unique)."""
    candidates: list[tuple[Step, ...]] = [("rate_limits",)]
    candidates += [("routes", index, "rate_limits") for index in range(len(upstream.routes))]
    for prefix in candidates:
        entries = where.node(*prefix)
        if entries is not None and isinstance(entries.value, list):
            for index, entry in enumerate(entries.value):
                named = entry.value.get("name") if isinstance(entry.value, dict) else None
                if named is not None and named.value == name:
                    return (*prefix, index)
    return ("rate_limits",)


# Retries --------------------------------------------------------------------------------------------------

def _short_deadlines(upstream: Upstream, where: _Locator) -> Iterator[Problem]:
    """A deadline under one attempt's timeout: the first attempt is not cut, but once it times out no retry fits."""
    if upstream.default_route is not None:
        message = _deadline_problem(upstream.default_route, upstream)
        if message:
            yield where.problem(_deadline_steps(where, ()), message, WARNING)
    for index, route in enumerate(upstream.routes):
        message = _deadline_problem(route, upstream)
        if message and where.has("routes", index, "retry"):
            yield where.problem(_deadline_steps(where, ("routes", index)), message, WARNING)


def _deadline_problem(route: Route, upstream: Upstream) -> str:
    retry = route.retry
    if retry.attempts == 0:
        return ""
    attempt, source = (retry.per_try_timeout, "per_try_timeout") if retry.per_try_timeout else (
        upstream.timeout, "the upstream's timeout")
    if retry.deadline >= attempt:
        return ""
    return (f"deadline {_seconds(retry.deadline)} is shorter than one attempt ({source} {_seconds(attempt)}): "
            "a first attempt that times out leaves no time to retry")


def _deadline_steps(where: _Locator, route: tuple[Step, ...]) -> tuple[Step, ...]:
    for key in ("deadline", "per_try_timeout"):
        if where.has(*route, "retry", key):
            return (*route, "retry", key)
    return (*route, "retry") if where.has(*route, "retry") else route or ("timeout",)


def _seconds(value: float) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{value / 3600:g}h" if value % 3600 == 0 else f"{value / 60:g}m"
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


# Webhooks -------------------------------------------------------------------------------------------------

TWILIO_WAITS = 15.0
"""Seconds Twilio waits for a webhook's answer (its read timeout)."""


def _webhooks(config: Config, trees: Mapping[str, YNode]) -> Iterator[Problem]:
    for webhook in config.webhooks:
        tree = trees.get(webhook.source)
        if tree is None:
            continue
        where = _Locator(webhook.source, tree, ("webhooks", webhook.name))
        if config.webhooks_listen is None:
            yield where.problem(("path",), f"no webhooks.listen in {config.source}: this webhook never receives a "
                                "request", WARNING)
        elif webhook.provider == "none" and not config.webhooks_listen.is_loopback:
            yield where.problem(("provider",), f"provider: none on {config.webhooks_listen}, which other hosts can "
                                "reach: anyone who reaches it can queue events for the app (verify with twilio, "
                                "google or hmac)", WARNING)
        if webhook.provider == "twilio" and webhook.mode == "sync" and webhook.delivery.timeout >= TWILIO_WAITS:
            yield where.problem(("delivery", "timeout"), f"{_seconds(webhook.delivery.timeout)} in mode: sync: "
                                f"Twilio waits {_seconds(TWILIO_WAITS)} for an answer and gives up before the app's "
                                "reply is relayed (write less than 15s)", WARNING)
