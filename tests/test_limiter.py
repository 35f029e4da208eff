"""The limiter on its own: admitting against the limits with their RateLimit fields, the local cache of
rejections, missing keys, a dead store (``on_backend_error``) and holds when the upstream throttles.

A memory store and the limiter share one FakeClock, so nothing sleeps; events go to a list.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from proxy.clock import FakeClock
from proxy.config.model import DEFAULT_ROUTE, Route, Upstream
from proxy.config.policy_values import BackendError, KeyKind, LimitPolicy, MissingKey, Rate
from proxy.errors import LimitUnavailable, MissingLimitKey, RateLimited
from proxy.events import LimitDecision, UpstreamThrottled
from proxy.limiter import HOLD_MAX, Limiter, rate_limit_headers
from proxy.policy import ratelimit
from proxy.policy.limitkeys import RequestFacts, key_value
from proxy.policy.ratelimit import ANONYMOUS, Check, Verdict
from proxy.state.base import BackendUnavailable
from proxy.state.memory_limits import MemoryLimitStore

UPSTREAM = Upstream(name="api", url="http://127.0.0.1:1", prefix="/api", timeout=1.0, connect_timeout=1.0,
                    max_request_body=1024, max_connections=4, ca_bundle=None, forwarded_headers=False,
                    strip_headers=(), source="t")
ORG = {"X-Org-Id": "acme"}


TWO_A_MINUTE = Rate(2, 60.0, 1)


def limit(name: str = "per-org", kind: KeyKind = KeyKind.ORG, rate: Rate = TWO_A_MINUTE, **options: object
          ) -> LimitPolicy:
    return LimitPolicy(name, kind, rate, **options)  # type: ignore[arg-type]


def route(*limits: LimitPolicy) -> Route:
    return Route(DEFAULT_ROUTE, None, None, (), None, frozenset(), rate_limits=limits)


def facts(headers: dict[str, str] | None = None) -> RequestFacts:
    return RequestFacts(headers if headers is not None else ORG, "127.0.0.1")


class CountingStore(MemoryLimitStore):
    """The memory store, counting the round trips a shared store would make."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.acquired = 0
        self.held: list[tuple[list[str], float]] = []

    async def acquire(self, checks: Sequence[Check]) -> list[Verdict]:
        self.acquired += 1
        return await super().acquire(checks)

    async def hold(self, checks: Sequence[Check], seconds: float) -> None:
        self.held.append(([c.bucket for c in checks], seconds))
        await super().hold(checks, seconds)


class DeadStore(MemoryLimitStore):
    """A shared store that cannot decide in time."""

    async def acquire(self, checks: Sequence[Check]) -> list[Verdict]:
        raise BackendUnavailable("redis: timed out")

    async def hold(self, checks: Sequence[Check], seconds: float) -> None:
        raise BackendUnavailable("redis: timed out")


def make(store_class: type[MemoryLimitStore] = CountingStore) -> tuple[Limiter, FakeClock, list[object], MemoryLimitStore]:
    clock = FakeClock()
    events: list[object] = []
    store = store_class(clock)
    return Limiter(store, clock=clock, emit=events.append), clock, events, store


async def test_allowed_requests_carry_the_most_restrictive_limits_ratelimit_fields() -> None:
    limiter, _, events, _ = make()
    chosen = route(limit("per-org", rate=Rate(2, 60.0, 1)), limit("global", KeyKind.GLOBAL, Rate(100, 1.0, 100)))
    checks, fields = await limiter.admit(UPSTREAM, chosen, facts())
    assert [c.bucket for c in checks] == ["per-org:acme", "global:global"]
    assert fields == {"RateLimit-Limit": "2", "RateLimit-Remaining": "1", "RateLimit-Reset": "30",
                      "RateLimit-Policy": "2;w=60"}
    assert events == [LimitDecision("api", DEFAULT_ROUTE, "per-org", "allowed"),
                      LimitDecision("api", DEFAULT_ROUTE, "global", "allowed")]


async def test_a_spent_bucket_rejects_with_retry_after_then_from_the_local_cache_until_it_may_pass() -> None:
    limiter, clock, events, store = make()
    chosen = route(limit(rate=Rate(1, 10.0, 0)))
    await limiter.admit(UPSTREAM, chosen, facts())
    with pytest.raises(RateLimited) as rejected:
        await limiter.admit(UPSTREAM, chosen, facts())
    headers = rejected.value.response_headers()
    assert (headers["Retry-After"], headers["RateLimit-Remaining"], headers["RateLimit-Limit"]) == ("10", "0", "1")
    assert events[-1] == LimitDecision("api", DEFAULT_ROUTE, "per-org", "rejected")
    assert isinstance(store, CountingStore) and store.acquired == 2
    with pytest.raises(RateLimited):
        await limiter.admit(UPSTREAM, chosen, facts())
    assert store.acquired == 2, "known to reject: no round trip"
    clock.advance(10.0)
    await limiter.admit(UPSTREAM, chosen, facts())
    assert store.acquired == 3
    other = await limiter.admit(UPSTREAM, chosen, facts({"X-Org-Id": "globex"}))
    assert [c.bucket for c in other[0]] == ["per-org:globex"], "one bucket per key value"


async def test_a_shadow_limit_only_reports_what_it_would_have_rejected() -> None:
    limiter, _, events, _ = make()
    chosen = route(limit(rate=Rate(1, 60.0, 0), shadow=True))
    await limiter.admit(UPSTREAM, chosen, facts())
    await limiter.admit(UPSTREAM, chosen, facts())
    assert events[-1] == LimitDecision("api", DEFAULT_ROUTE, "per-org", "shadow_rejected")


@pytest.mark.parametrize(("mode", "buckets"), [(MissingKey.ANONYMOUS, ["per-org:-"]), (MissingKey.SKIP, [])])
async def test_a_request_without_the_key_shares_one_bucket_or_skips_the_limit(mode: MissingKey,
                                                                             buckets: list[str]) -> None:
    limiter, _, _, _ = make()
    checks, fields = await limiter.admit(UPSTREAM, route(limit(on_missing_key=mode)), facts({}))
    assert [c.bucket for c in checks] == buckets
    assert bool(fields) == bool(buckets)


async def test_a_request_without_the_key_is_refused_when_the_limit_says_reject() -> None:
    limiter, _, events, _ = make()
    with pytest.raises(MissingLimitKey) as refused:
        await limiter.admit(UPSTREAM, route(limit(on_missing_key=MissingKey.REJECT)), facts({}))
    assert refused.value.message == "rate limit per-org needs header X-Org-Id"
    assert refused.value.status == 400 and events == []


async def test_a_dead_store_lets_allow_limits_pass_and_refuses_deny_limits() -> None:
    limiter, _, events, _ = make(DeadStore)
    checks, _ = await limiter.admit(UPSTREAM, route(limit()), facts())
    assert [c.bucket for c in checks] == ["per-org:acme"]
    assert events == [LimitDecision("api", DEFAULT_ROUTE, "per-org", "allowed_backend_down")]
    with pytest.raises(LimitUnavailable) as refused:
        await limiter.admit(UPSTREAM, route(limit(on_backend_error=BackendError.DENY)), facts())
    assert refused.value.status == 503 and refused.value.response_headers() == {"Retry-After": "1"}
    assert events[-1] == LimitDecision("api", DEFAULT_ROUTE, "per-org", "rejected_backend_down")


async def test_a_dead_store_enforces_the_local_share_of_the_rate_in_this_process() -> None:
    limiter, _, events, _ = make(DeadStore)
    chosen = route(limit(rate=Rate(10, 60.0, 10), local_share=0.2))  # 2 here, burst 2
    for _ in range(3):
        await limiter.admit(UPSTREAM, chosen, facts())
    with pytest.raises(RateLimited):
        await limiter.admit(UPSTREAM, chosen, facts())
    assert events[-1] == LimitDecision("api", DEFAULT_ROUTE, "per-org", "rejected_backend_down")


async def test_an_upstream_that_throttles_holds_the_requests_buckets_for_the_fleet() -> None:
    limiter, clock, events, store = make()
    chosen = route(limit(rate=Rate(100, 1.0, 100)), limit("tenant", KeyKind.HEADER, key_name="X-Tenant",
                                                           on_missing_key=MissingKey.ANONYMOUS,
                                                           honor_upstream_retry_after=False))
    checks, _ = await limiter.admit(UPSTREAM, chosen, facts())
    limiter.throttled(UPSTREAM, chosen, checks, 429, "429", 5.0)
    await limiter.close()
    assert events[-1] == UpstreamThrottled("api", DEFAULT_ROUTE, 429, "429", 5.0)
    assert isinstance(store, CountingStore) and store.held == [(["per-org:acme"], 5.0)], \
        "only the limits that honour the upstream's Retry-After"
    with pytest.raises(RateLimited):
        await limiter.admit(UPSTREAM, chosen, facts())
    clock.advance(5.0)
    await limiter.admit(UPSTREAM, chosen, facts())


async def test_a_throttling_signal_without_retry_after_holds_nothing_and_a_long_one_is_capped() -> None:
    limiter, _, events, store = make()
    chosen = route(limit(rate=Rate(100, 1.0, 100)))
    checks, _ = await limiter.admit(UPSTREAM, chosen, facts())
    limiter.throttled(UPSTREAM, chosen, checks, 403, "rateLimitExceeded", None)
    limiter.throttled(UPSTREAM, chosen, checks, 429, "429", 86400.0)
    await limiter.close()
    assert [e for e in events if isinstance(e, UpstreamThrottled)] == [
        UpstreamThrottled("api", DEFAULT_ROUTE, 403, "rateLimitExceeded", None),
        UpstreamThrottled("api", DEFAULT_ROUTE, 429, "429", HOLD_MAX)]
    assert isinstance(store, CountingStore) and store.held == [(["per-org:acme"], HOLD_MAX)]


async def test_a_hold_on_a_dead_store_is_dropped_quietly_and_still_holds_locally() -> None:
    limiter, _, _, _ = make(DeadStore)
    chosen = route(limit())
    checks, _ = await limiter.admit(UPSTREAM, chosen, facts())
    limiter.throttled(UPSTREAM, chosen, checks, 429, "429", 5.0)
    await limiter.close()
    with pytest.raises(RateLimited):
        await limiter.admit(UPSTREAM, chosen, facts())


# -- the prepared path against the plain algorithm --------------------------------------------------------


class Reference:
    """The limiter's rules written straight, one request at a time: the keys read afresh, a check built
    per limit, the store asked unless a bucket is known to reject (the cache of rejections), every
    decision told, the RateLimit fields of the most restrictive limit."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.store, self.events = clock, MemoryLimitStore(clock), []  # type: ignore[var-annotated]
        self.blocked: dict[tuple[str, str], tuple[float, float]] = {}

    async def verdicts(self, checks: list[Check]) -> list[Verdict]:
        now = self.clock.now()
        cached: list[Verdict] | None = None
        for i, c in enumerate(checks):
            until = self.blocked.get((c.group, c.bucket)) if c.enforcing else None
            if until is not None and until[0] <= now:
                del self.blocked[(c.group, c.bucket)]
            elif until is not None:
                cached = cached or [Verdict(True, 0, 0.0)] * len(checks)
                cached[i] = Verdict(False, 0, until[1] - now, until[0] - now)
        if cached is not None:
            return cached
        verdicts = await self.store.acquire(checks)
        for c, v in zip(checks, verdicts):
            if c.enforcing and not v.allowed and v.retry_after > 0:
                self.blocked[(c.group, c.bucket)] = (now + v.retry_after, now + v.reset)
        return verdicts

    async def admit(self, route_: Route, facts_: RequestFacts) -> tuple[list[str], dict[str, str]]:
        return await reference_admit(self, route_, facts_, self.events)


async def reference_admit(reference: Reference, route_: Route, facts_: RequestFacts,
                          events: list[object]) -> tuple[list[str], dict[str, str]]:
    checks = []
    for lim in route_.rate_limits:
        value = key_value(lim, facts_)
        if value is None:
            if lim.on_missing_key == MissingKey.REJECT:
                raise MissingLimitKey(lim.name, upstream=UPSTREAM.name)
            if lim.on_missing_key == MissingKey.SKIP:
                continue
            value = ANONYMOUS
        checks.append(Check(lim, UPSTREAM.name, f"{lim.name}:{value}", lim.rate_for(value)))
    if not checks:
        return [], {}
    verdicts = await reference.verdicts(checks)
    passing = ratelimit.passed(checks, verdicts)
    for c, v in zip(checks, verdicts):
        if v.allowed and passing:
            events.append(LimitDecision("api", DEFAULT_ROUTE, c.limit.name, "allowed"))
        elif not v.allowed and c.enforcing:
            events.append(LimitDecision("api", DEFAULT_ROUTE, c.limit.name, "rejected"))
        elif not v.allowed and passing:
            events.append(LimitDecision("api", DEFAULT_ROUTE, c.limit.name, "shadow_rejected"))
    refused = ratelimit.blocking(checks, verdicts)
    if refused is not None:
        wait = max(1, math.ceil(verdicts[refused].retry_after))
        raise RateLimited("rejected", upstream=UPSTREAM.name, limit=checks[refused].limit.name,
                          headers={"Retry-After": str(wait), **rate_limit_headers(checks[refused].rate, verdicts[refused])})
    shown = ratelimit.most_restrictive(checks, verdicts)
    return [c.bucket for c in checks], rate_limit_headers(checks[shown].rate, verdicts[shown]) if shown is not None else {}


@pytest.mark.parametrize("seed", range(6))
async def test_the_prepared_limits_decide_every_request_as_the_plain_rules_do(seed: int) -> None:
    """Random limits (every key kind, shared keys, shadow, overrides, missing keys) and random requests:
    the limiter (limits prepared once, checks reused, the usual outcome's events built once) answers,
    charges and tells exactly what the rules written straight do, on its own store."""
    chance = random.Random(seed)
    kinds = [(KeyKind.ORG, ""), (KeyKind.IP, ""), (KeyKind.GLOBAL, ""), (KeyKind.HEADER, "X-Tenant"),
             (KeyKind.BASIC_AUTH_USER, "")]
    limits = []
    for i in range(chance.randint(1, 4)):
        kind, key_name = chance.choice(kinds)
        rate = Rate(chance.randint(2, 6), chance.choice([1.0, 10.0]), chance.randint(0, 3))
        roomy = Rate(50, 1.0, 10)
        overrides = tuple((value, roomy) for value in ("acme", "203.0.113.7", "global", "t1", "AC123")
                          if chance.random() < 0.4)
        limits.append(limit(f"l{i}", kind, rate, key_name=key_name, shadow=chance.random() < 0.2,
                            on_missing_key=chance.choice([MissingKey.ANONYMOUS, MissingKey.SKIP, MissingKey.REJECT]),
                            overrides=overrides))
    chosen = route(*limits)
    clock = FakeClock()
    fast_events: list[object] = []
    limiter = Limiter(MemoryLimitStore(clock), clock=clock, emit=fast_events.append)
    reference = Reference(clock)
    for step in range(300):
        headers = {name: chance.choice(values) for name, values in (
            ("X-Org-Id", ["acme", "globex", " acme "]), ("X-Forwarded-For", ["203.0.113.7", "198.51.100.1, 10.0.0.1"]),
            ("X-Tenant", ["t1", "t2"]), ("Authorization", ["Basic QUMxMjM6c2VjcmV0"])) if chance.random() < 0.7}
        request = RequestFacts(headers, chance.choice(["127.0.0.1", None]))
        fast: object
        plain: object
        try:
            checks, fields = await limiter.admit(UPSTREAM, chosen, request)
            fast = ([c.bucket for c in checks], dict(fields))
        except (MissingLimitKey, RateLimited) as error:
            fast = (type(error), error.response_headers())
        try:
            plain = await reference.admit(chosen, request)
        except (MissingLimitKey, RateLimited) as error:
            plain = (type(error), error.response_headers())
        assert fast == plain, f"step {step}"
        assert fast_events == reference.events, f"step {step}"
        clock.advance(chance.choice([0.0, 0.0, 0.05, 0.5, 3.0]))


async def test_each_key_value_has_its_own_bucket_and_a_new_route_its_own_rates() -> None:
    limiter, clock, _, store = make()
    chosen = route(limit("per-ip", KeyKind.IP, Rate(2, 60.0, 1)), limit("per-ip-hour", KeyKind.IP, Rate(9, 3600.0, 8)))
    first, _ = await limiter.admit(UPSTREAM, chosen, facts({"X-Forwarded-For": "203.0.113.7"}))
    again, _ = await limiter.admit(UPSTREAM, chosen, facts({"X-Forwarded-For": "203.0.113.7"}))
    other, _ = await limiter.admit(UPSTREAM, chosen, facts({"X-Forwarded-For": "198.51.100.1"}))
    assert [c.bucket for c in first] == ["per-ip:203.0.113.7", "per-ip-hour:203.0.113.7"], "one address, read once"
    assert [c.bucket for c in other] == ["per-ip:198.51.100.1", "per-ip-hour:198.51.100.1"]
    assert first == again
    with pytest.raises(RateLimited):
        await limiter.admit(UPSTREAM, chosen, facts({"X-Forwarded-For": "203.0.113.7"}))
    # A reload: a new route object whose limit of the same name allows more now.
    roomier = route(limit("per-ip", KeyKind.IP, Rate(100, 60.0, 99)), limit("per-ip-hour", KeyKind.IP, Rate(9, 3600.0, 8)))
    limiter.forget_rejections()
    clock.advance(60.0)
    checks, fields = await limiter.admit(UPSTREAM, roomier, facts({"X-Forwarded-For": "203.0.113.7"}))
    assert checks[0].rate == Rate(100, 60.0, 99) and fields["RateLimit-Remaining"] == "6"
    for _ in range(6):  # 2 + 6 + this one would be 9 calls an hour: the old route's limit would have refused
        await limiter.admit(UPSTREAM, roomier, facts({"X-Forwarded-For": "203.0.113.7"}))
    assert isinstance(store, CountingStore)


async def test_a_client_inventing_key_values_costs_a_rebuild_never_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.limiter._CHECKS_MAX", 3)
    limiter, _, _, _ = make()
    chosen = route(limit(rate=Rate(1, 60.0, 0)))
    for org in ("a", "b", "c", "d", "e"):
        checks, _ = await limiter.admit(UPSTREAM, chosen, facts({"X-Org-Id": org}))
        assert [c.bucket for c in checks] == [f"per-org:{org}"]
    (slot,) = limiter._plans[id(chosen)].slots
    assert len(slot.checks) <= 3
    with pytest.raises(RateLimited):  # the buckets live in the store, not in the forgotten checks
        await limiter.admit(UPSTREAM, chosen, facts({"X-Org-Id": "a"}))


async def test_a_skipped_limit_is_not_told_and_the_others_are() -> None:
    limiter, _, events, _ = make()
    chosen = route(limit("tenant", KeyKind.HEADER, key_name="X-Tenant", on_missing_key=MissingKey.SKIP),
                   limit("global", KeyKind.GLOBAL, Rate(100, 1.0, 100)))
    checks, fields = await limiter.admit(UPSTREAM, chosen, facts())
    assert [c.bucket for c in checks] == ["global:global"] and fields["RateLimit-Limit"] == "100"
    assert events == [LimitDecision("api", DEFAULT_ROUTE, "global", "allowed")]
