"""The limiter on its own: admitting against the limits with their RateLimit fields, the local cache of
rejections, missing keys, a dead store (``on_backend_error``) and holds when the upstream throttles.

A memory store and the limiter share one FakeClock, so nothing sleeps; events go to a list.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from proxy.clock import FakeClock
from proxy.config.model import DEFAULT_ROUTE, Route, Upstream
from proxy.config.policy_values import BackendError, KeyKind, LimitPolicy, MissingKey, Rate
from proxy.errors import LimitUnavailable, MissingLimitKey, RateLimited
from proxy.events import LimitDecision, UpstreamThrottled
from proxy.limiter import HOLD_MAX, Limiter
from proxy.policy.limitkeys import RequestFacts
from proxy.policy.ratelimit import Check, Verdict
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
