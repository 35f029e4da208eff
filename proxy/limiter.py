"""Per-request rate limiting: which buckets a request spends, asking the store, and what to
do when the shared store is down.

The maths is :mod:`proxy.policy.ratelimit`; the buckets live in a :class:`LimitStore`. This
module adds what sits between them:

- a local cache of rejections: GCRA says exactly when a rejected bucket may pass again, and
  other replicas can only push that time later, so until then a request for that bucket is
  rejected here without a round trip (a client hammering a spent key costs Redis nothing);
- each limit's ``on_backend_error`` when the store cannot decide in time: ``allow`` (optionally
  enforcing a ``local_share`` of the rate in this process) or ``deny``;
- holding buckets when the upstream itself says it is throttling us.

Every request of a route spends the same few limits, so the route's limits are prepared once (a
:class:`_Plan`): which limits read the same key (its value is read once per request), the
:class:`Check` made for each key value seen (reused, not rebuilt), and the event of the usual
outcome. A request that every limit allows, the usual case, takes one pass with no other allocation
than its verdicts and its RateLimit fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from proxy.clock import Clock, SystemClock
from proxy.config.model import Route, Upstream
from proxy.config.policy_values import MICROS, BackendError, KeyKind, LimitPolicy, MissingKey
from proxy.errors import LimitUnavailable, MissingLimitKey, RateLimited
from proxy.events import LimitDecision, UpstreamThrottled
from proxy.policy import ratelimit
from proxy.policy.limitkeys import RequestFacts, key_value
from proxy.policy.ratelimit import ANONYMOUS, Check, Verdict
from proxy.state.base import BackendUnavailable, LimitStore
from proxy.state.memory_limits import MemoryLimitStore

log = logging.getLogger("resilience_proxy.limits")

HOLD_MAX = 600.0
"""The longest upstream Retry-After honoured for a bucket; a longer one is treated as this long."""
_CACHE_MAX = 50_000
_SHADOW_LOG_EVERY = 10.0
_NO_FIELDS: Mapping[str, str] = {}
_PLANS_MAX = 1_000
"""Routes prepared at once; past it (many reloads) the preparations start over."""
_CHECKS_MAX = 10_000
"""Checks kept per limit, one per key value seen; past it the limit's start over (the values are the
clients' own: a client inventing keys costs a rebuild, never memory)."""
_ALLOWED = "allowed"


class _Slot:
    """One limit of a route, prepared for the hot path."""

    __slots__ = ("allowed", "checks", "limit", "same_key_as")

    def __init__(self, limit: LimitPolicy, same_key_as: int, allowed: LimitDecision) -> None:
        self.limit = limit
        self.same_key_as = same_key_as
        """The index of an earlier limit of the route with the same key, whose value this one reuses; -1 if none."""
        self.checks: dict[str | None, Check] = {}
        """By key value (None: the request has none), the check a request with that value makes."""
        self.allowed = allowed
        """The event of this limit allowing a request (events are values: one serves every request)."""


class _Plan:
    """A route's limits, prepared on its first request; routes are immutable, so it stays right."""

    __slots__ = ("route", "slots", "upstream")

    def __init__(self, upstream: Upstream, route: Route) -> None:
        self.upstream = upstream
        self.route = route
        limits = route.rate_limits
        self.slots = tuple(
            _Slot(limit, next((j for j in range(i) if (limits[j].kind, limits[j].key_name) ==
                               (limit.kind, limit.key_name)), -1),
                  LimitDecision(upstream.name, route.name, limit.name, _ALLOWED))
            for i, limit in enumerate(limits))


@dataclass(frozen=True)
class Blocked:
    """A bucket known to reject until ``allow_at``."""

    allow_at: float
    reset_at: float


class Limiter:
    def __init__(self, store: LimitStore, *, clock: Clock | None = None,
                 emit: Callable[[object], None] = lambda _: None) -> None:
        """``emit``: where the limiter's events go (the event bus), as for the Guard."""
        self.store = store
        self._clock = clock or SystemClock()
        self._emit = emit
        self._local = MemoryLimitStore(self._clock)
        """Local shares of the rates while the store is down."""
        self._blocked: dict[tuple[str, str], Blocked] = {}
        self._shadow_seen: dict[str, tuple[float, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._plans: dict[int, _Plan] = {}
        """By ``id`` of the route (the plan holds the route, so the id stays its own)."""

    async def admit(self, upstream: Upstream, route: Route,
                    facts: RequestFacts) -> tuple[Sequence[Check], Mapping[str, str]]:
        """Let the request pass: the buckets it spent (to hold them if the upstream throttles it) and its
        RateLimit header fields. Raises MissingLimitKey (``on_missing_key: reject``), RateLimited, or
        LimitUnavailable (a ``deny`` limit while the store is down)."""
        plan = self._plans.get(id(route))
        if plan is None or plan.route is not route or plan.upstream is not upstream:
            plan = self._prepare(upstream, route)
        checks, slots = self._checks(plan, upstream, facts)
        if not checks:
            return checks, _NO_FIELDS
        now = self._clock.now()
        verdicts = self._cached(checks, now) if self._blocked else None
        fresh = verdicts is None
        degraded = False
        if fresh:
            try:
                verdicts = await self.store.acquire(checks)
            except BackendUnavailable:
                fresh, degraded = False, True
                verdicts = self._without_backend(checks)
        if not degraded:
            for verdict in verdicts:
                if not verdict.allowed:
                    break
            else:  # every limit allows it: the usual case, nothing to remember, the usual events
                for slot in slots:
                    self._emit(slot.allowed)
                shown = ratelimit.most_restrictive(checks, verdicts)
                return checks, rate_limit_headers(checks[shown].rate, verdicts[shown]) if shown is not None else _NO_FIELDS
        if fresh:
            self._remember(checks, verdicts, now)
        self._tell(upstream, route, checks, verdicts, degraded)
        refused = ratelimit.blocking(checks, verdicts)
        if refused is not None:
            check = checks[refused]
            if degraded and check.limit.on_backend_error == BackendError.DENY:
                raise LimitUnavailable(f"rate limit {check.limit.name} cannot be checked: the state backend is "
                                       "unavailable", upstream=upstream.name, limit=check.limit.name)
            raise self._rejection(upstream, check, verdicts[refused])
        shown = ratelimit.most_restrictive(checks, verdicts)
        return checks, rate_limit_headers(checks[shown].rate, verdicts[shown]) if shown is not None else _NO_FIELDS

    def _prepare(self, upstream: Upstream, route: Route) -> _Plan:
        if len(self._plans) >= _PLANS_MAX:
            self._plans.clear()
        plan = self._plans[id(route)] = _Plan(upstream, route)
        return plan

    def _checks(self, plan: _Plan, upstream: Upstream, facts: RequestFacts) -> tuple[list[Check], Sequence[_Slot]]:
        """The buckets this request spends, and the limits they belong to; raises MissingLimitKey for
        ``on_missing_key: reject``."""
        checks: list[Check] = []
        values: list[str | None] = []
        used: list[_Slot] | None = None
        """The limits spent, once one was skipped (until then: all of them so far)."""
        for index, slot in enumerate(plan.slots):
            value = values[slot.same_key_as] if slot.same_key_as >= 0 else key_value(slot.limit, facts)
            values.append(value)
            check = slot.checks.get(value)
            if check is None:
                limit = slot.limit
                if value is None:
                    if limit.on_missing_key == MissingKey.REJECT:
                        raise MissingLimitKey(f"rate limit {limit.name} needs {_describe_key(limit, facts)}",
                                              upstream=upstream.name)
                    if limit.on_missing_key == MissingKey.SKIP:
                        if used is None:
                            used = list(plan.slots[:index])
                        continue
                spent = ANONYMOUS if value is None else value
                check = Check(limit, upstream.name, f"{limit.name}:{spent}", limit.rate_for(spent))
                if len(slot.checks) >= _CHECKS_MAX:
                    slot.checks.clear()
                slot.checks[value] = check
            checks.append(check)
            if used is not None:
                used.append(slot)
        return checks, plan.slots if used is None else used

    def throttled(self, upstream: Upstream, route: Route, checks: Sequence[Check], status: int, reason: str,
                  retry_after: float | None) -> None:
        """The upstream says we call it too often: say so and, when it said how long to wait, hold
        this request's buckets that long for the fleet (capped at :data:`HOLD_MAX`)."""
        seconds = min(retry_after, HOLD_MAX) if retry_after is not None else None
        self._emit(UpstreamThrottled(upstream.name, route.name, status, reason, seconds))
        if seconds:
            self.hold(checks, seconds)

    def hold(self, checks: Sequence[Check], seconds: float) -> None:
        """No call through these buckets for ``seconds``, for the whole fleet (limits that honour
        upstream Retry-After only). Runs in the background; a dead store is ignored."""
        held = [c for c in checks if c.enforcing and c.limit.honor_upstream_retry_after]
        if not held or seconds <= 0:
            return
        now = self._clock.now()
        for check in held:
            until = now + seconds
            self._blocked[check.key] = Blocked(until, until + check.rate.tolerance / MICROS)
        task = asyncio.get_running_loop().create_task(self._hold(held, seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget_rejections(self) -> None:
        """Drop the cached rejections: after a reload a limit of the same name may allow more now."""
        self._blocked.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task

    async def _hold(self, checks: list[Check], seconds: float) -> None:
        try:
            await self.store.hold(checks, seconds)
        except BackendUnavailable:
            pass
        except Exception:
            log.exception("holding rate-limit buckets failed")

    def _cached(self, checks: Sequence[Check], now: float) -> list[Verdict] | None:
        """Verdicts without the store when an enforcing bucket is known to reject; None otherwise."""
        found = None
        for index, check in enumerate(checks):
            if not check.enforcing:
                continue
            blocked = self._blocked.get(check.key)
            if blocked is None:
                continue
            if blocked.allow_at <= now:
                del self._blocked[check.key]
                continue
            if found is None:
                found = [Verdict(True, 0, 0.0)] * len(checks)
            found[index] = Verdict(False, 0, blocked.reset_at - now, blocked.allow_at - now)
        return found

    def _remember(self, checks: Sequence[Check], verdicts: Sequence[Verdict], now: float) -> None:
        for check, verdict in zip(checks, verdicts):
            if check.enforcing and not verdict.allowed and verdict.retry_after > 0:
                if len(self._blocked) >= _CACHE_MAX:
                    self._blocked = {k: b for k, b in self._blocked.items() if b.allow_at > now}
                    if len(self._blocked) >= _CACHE_MAX:
                        self._blocked.clear()
                self._blocked[check.key] = Blocked(now + verdict.retry_after, now + verdict.reset)

    def _without_backend(self, checks: Sequence[Check]) -> list[Verdict]:
        """Each limit's ``on_backend_error``: deny, allow, or allow within a local share of the rate."""
        verdicts = [Verdict(True, 0, 0.0)] * len(checks)
        shared = [i for i, c in enumerate(checks)
                  if c.limit.on_backend_error == BackendError.ALLOW and c.limit.local_share]
        if shared:
            local = self._local.acquire_now(
                [replace(checks[i], rate=checks[i].rate.share(checks[i].limit.local_share)) for i in shared])
            for i, verdict in zip(shared, local):
                verdicts[i] = verdict
        for i, check in enumerate(checks):
            if check.limit.on_backend_error == BackendError.DENY:
                verdicts[i] = Verdict(False, 0, 0.0, 1.0)
        return verdicts

    def _rejection(self, upstream: Upstream, check: Check, verdict: Verdict) -> RateLimited:
        rate = check.rate
        wait = max(1, math.ceil(verdict.retry_after))
        headers = {"Retry-After": str(wait), **rate_limit_headers(rate, verdict)}
        return RateLimited(f"rate limit {check.limit.name} exceeded ({rate.limit} per {_duration(rate.per)}); "
                           f"retry in {wait}s", upstream=upstream.name, limit=check.limit.name, headers=headers)

    def _tell(self, upstream: Upstream, route: Route, checks: Sequence[Check], verdicts: Sequence[Verdict],
              degraded: bool) -> None:
        passed = ratelimit.passed(checks, verdicts)
        for check, verdict in zip(checks, verdicts):
            if verdict.allowed:
                if not passed:
                    continue
                outcome = "allowed_backend_down" if degraded else "allowed"
            elif check.enforcing:
                outcome = "rejected_backend_down" if degraded else "rejected"
            elif passed:
                outcome = "shadow_rejected"
                self._log_shadow(upstream, check)
            else:
                continue
            self._emit(LimitDecision(upstream.name, route.name, check.limit.name, outcome))

    def _log_shadow(self, upstream: Upstream, check: Check) -> None:
        """At most one line per limit every few seconds, with how many calls it would have rejected."""
        now = self._clock.monotonic()
        name = f"{upstream.name}/{check.limit.name}"
        since, count = self._shadow_seen.get(name, (now, 0))
        count += 1
        if count == 1 or now - since >= _SHADOW_LOG_EVERY:
            log.warning("shadow rate limit would have rejected calls",
                        extra={"upstream": upstream.name, "limit": check.limit.name, "count": count})
            self._shadow_seen[name] = (now, 0)
        else:
            self._shadow_seen[name] = (since, count)


def rate_limit_headers(rate: ratelimit.Rate, verdict: Verdict) -> dict[str, str]:
    """The IETF RateLimit header fields (limit, remaining, reset) and the policy they come from."""
    return {
        "RateLimit-Limit": str(rate.limit),
        "RateLimit-Remaining": str(verdict.remaining),
        "RateLimit-Reset": str(max(0, math.ceil(verdict.reset - 1e-9))),
        "RateLimit-Policy": f"{rate.limit};w={max(1, math.ceil(rate.per))}",
    }


def _describe_key(limit: LimitPolicy, facts: RequestFacts) -> str:
    if limit.kind == KeyKind.ORG:
        return f"header {facts.org_header}"
    if limit.kind == KeyKind.HEADER:
        return f"header {limit.key_name}"
    if limit.kind == KeyKind.PATH:
        return f"{{{limit.key_name}}} in the path"
    if limit.kind == KeyKind.BASIC_AUTH_USER:
        return "an Authorization: Basic header"
    return "a client address"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"
