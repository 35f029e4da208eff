"""The guard on its own: breaker admission, the retry loop, its deadline and budget, outcome reporting.

A fake attempt function plays the upstream from a script, a FakeClock gives time and takes every
wait (nothing sleeps), and the breakers live in a memory store on the same clock.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from proxy.clock import FakeClock
from proxy.config.model import DEFAULT_ROUTE, Route, Upstream
from proxy.config.policy_values import BreakerPolicy, RetryPolicy
from proxy.errors import BodyTooLarge, CircuitOpen, UpstreamConnectError, UpstreamTimeout
from proxy.events import AttemptEnded, CircuitRejected, RetryDecided
from proxy.guard import Guard, Reply
from proxy.policy.breaker import Action, State
from proxy.state.memory import MemoryBreakerStore

FIVE_XX = frozenset(range(500, 600))
UPSTREAM = Upstream(name="api", url="http://127.0.0.1:1", prefix="/api", timeout=10.0, connect_timeout=1.0,
                    max_request_body=1024, max_connections=4, ca_bundle=None, forwarded_headers=False,
                    strip_headers=(), source="t")
KEY = "api/default"
NO_JITTER = RetryPolicy(attempts=3, initial=1.0, multiplier=2.0, max_backoff=4.0, jitter=0.0, deadline=30.0)


def route(retry: RetryPolicy = NO_JITTER, breaker: BreakerPolicy | None = None) -> Route:
    return Route(DEFAULT_ROUTE, None, None, (), breaker, FIVE_XX, retry=retry)


class Released:
    """Stands in for an aiohttp response: records that the guard let go of it."""

    def __init__(self) -> None:
        self.released = False

    def release(self) -> None:
        self.released = True


class Upstream_:
    """The fake attempt function: replies from a script, advancing the clock by each reply's seconds."""

    def __init__(self, clock: FakeClock, script: Iterable[int | type[Exception] | Exception],
                 seconds: float = 0.1) -> None:
        self.clock, self.script, self.seconds = clock, list(script), seconds
        self.timeouts: list[float] = []
        self.replies: list[Reply] = []
        self.before: list[object] = []
        """Whatever ``before_each`` returned as each attempt started."""
        self.before_each = lambda: None

    async def __call__(self, call: str, timeout: float) -> Reply:
        assert call == "the request"
        self.before.append(self.before_each())
        self.timeouts.append(timeout)
        self.clock.advance(self.seconds)
        step = self.script.pop(0)
        if isinstance(step, int):
            reply = Reply(step, seconds=self.seconds, response=Released(),
                          retry_after=None, throttle="429" if step == 429 else None)
        else:
            failure = step if isinstance(step, Exception) else step("no answer", upstream="api")
            reply = Reply(failure=failure, seconds=self.seconds)
        self.replies.append(reply)
        return reply


def setup(retry: RetryPolicy = NO_JITTER, breaker: BreakerPolicy | None = None,
          script: Iterable[int | type[Exception] | Exception] = (200,),
          ) -> tuple[Guard, Upstream_, FakeClock, list[object], MemoryBreakerStore, Route]:
    clock = FakeClock()
    events: list[object] = []
    store = MemoryBreakerStore(clock, random=lambda: 0.5)
    guard = Guard(store, clock=clock, random=lambda: 0.5, emit=events.append)
    return guard, Upstream_(clock, script), clock, events, store, route(retry, breaker)


async def run(guard: Guard, fake: Upstream_, chosen: Route, method: str = "GET", replayable: bool = True,
              keyed: bool = False) -> Reply:
    return await guard.run(UPSTREAM, chosen, method, replayable, keyed, fake, "the request")


async def test_a_healthy_first_answer_is_final_without_any_retry_machinery() -> None:
    guard, fake, clock, events, _, chosen = setup(script=[200])
    reply = await run(guard, fake, chosen)
    assert (reply.status, reply.number) == (200, 1)
    assert clock.slept == [] and fake.timeouts == [10.0]
    assert events == [AttemptEnded("api", DEFAULT_ROUTE, 1, 200, None, 0.1)]


async def test_retries_back_off_exponentially_on_the_injected_clock_and_let_go_of_replaced_answers() -> None:
    guard, fake, clock, events, _, chosen = setup(script=[503, 503, UpstreamConnectError, 200])
    reply = await run(guard, fake, chosen)
    assert (reply.status, reply.number) == (200, 4)
    assert clock.slept == [1.0, 2.0, 4.0], "initial * multiplier**(n-1), capped at max_backoff"
    assert [r.response.released for r in fake.replies[:2]] == [True, True]
    assert not reply.response.released, "the final answer is the web layer's to relay"
    retried = [e for e in events if isinstance(e, RetryDecided)]
    assert [(e.retried, e.reason, e.delay) for e in retried] == [
        (True, "503", 1.0), (True, "503", 2.0), (True, "connect_error", 4.0)]
    assert [e.number for e in events if isinstance(e, AttemptEnded)] == [1, 2, 3, 4]


async def test_the_last_answer_is_relayed_when_the_attempts_are_spent() -> None:
    guard, fake, _, events, _, chosen = setup(script=[503] * 4)
    reply = await run(guard, fake, chosen)
    assert (reply.status, reply.number) == (503, 4)
    assert events[-2:] == [AttemptEnded("api", DEFAULT_ROUTE, 4, 503, None, 0.1),
                           RetryDecided("api", DEFAULT_ROUTE, False, "attempts exhausted")]


async def test_a_failure_without_an_answer_comes_back_as_the_reply_not_an_exception() -> None:
    guard, fake, _, events, _, chosen = setup(retry=RetryPolicy(attempts=0), script=[UpstreamTimeout])
    reply = await run(guard, fake, chosen)
    assert isinstance(reply.failure, UpstreamTimeout) and reply.error == "http_response_timeout"
    assert events == [AttemptEnded("api", DEFAULT_ROUTE, 1, 0, "http_response_timeout", 0.1)]


async def test_the_deadline_cuts_each_attempts_timeout_and_refuses_a_wait_that_would_cross_it() -> None:
    policy = RetryPolicy(attempts=5, initial=1.0, multiplier=1.0, max_backoff=1.0, jitter=0.0, deadline=4.0,
                         per_try_timeout=3.0)
    guard, fake, clock, events, _, chosen = setup(retry=policy, script=[503, 503, 503])
    fake.seconds = 1.0
    reply = await run(guard, fake, chosen)
    # 1 s answer, 1 s wait, 1 s answer (3 s gone), a wait of 1 s would reach the 4 s deadline
    assert (reply.status, reply.number) == (503, 2)
    assert fake.timeouts == [3.0, 2.0], "the second try gets what is left of the deadline, not its 3 s"
    assert [e.reason for e in events if isinstance(e, RetryDecided)] == ["503", "deadline"]
    assert clock.slept == [1.0]


async def test_the_retry_budget_bounds_retries_across_requests() -> None:
    policy = RetryPolicy(attempts=3, initial=0.0, jitter=0.0, budget_ratio=0.0, budget_min_per_second=0.1)
    guard, fake, _, events, _, chosen = setup(retry=policy, script=[503, 200, 503, 503])
    assert (await run(guard, fake, chosen)).status == 200  # the window's one retry (0.1/s over 10 s)
    reply = await run(guard, fake, chosen)
    assert (reply.status, reply.number) == (503, 1)
    assert [e.reason for e in events if isinstance(e, RetryDecided)] == ["503", "retry budget exhausted"]


async def test_a_post_is_not_repeated_unless_it_never_reached_the_upstream_or_carries_its_key() -> None:
    guard, fake, _, _, _, chosen = setup(script=[503, UpstreamConnectError, 200, 503, 200])
    assert (await run(guard, fake, chosen, method="POST")).number == 1
    assert (await run(guard, fake, chosen, method="POST")).number == 2, "refused: never reached it"
    assert (await run(guard, fake, chosen, method="POST", keyed=True)).number == 2


async def test_a_one_shot_body_is_never_retried() -> None:
    guard, fake, clock, _, _, chosen = setup(script=[503])
    reply = await run(guard, fake, chosen, replayable=False)
    assert (reply.status, reply.number) == (503, 1) and clock.slept == []


async def test_a_breaker_that_opens_on_the_failing_attempt_stops_the_retry() -> None:
    breaker = BreakerPolicy(consecutive_failures=1, open_for=30.0, jitter=0.0)
    guard, fake, clock, events, store, chosen = setup(breaker=breaker, script=[503, 200])
    reply = await run(guard, fake, chosen)
    assert (reply.status, reply.number) == (503, 1)
    assert store.view(KEY).state == State.OPEN
    assert [e.reason for e in events if isinstance(e, RetryDecided)] == ["breaker open"]
    assert clock.slept == []


async def test_a_breaker_opened_meanwhile_rejects_the_retry_with_circuit_open() -> None:
    breaker = BreakerPolicy(consecutive_failures=5, open_for=30.0, jitter=0.0)
    guard, fake, clock, events, store, chosen = setup(breaker=breaker, script=[503, 200])

    async def force_open_during_the_wait(seconds: float) -> None:
        await store.force(KEY, breaker, Action.FORCE_OPEN, "oncall")

    clock.sleep = force_open_during_the_wait  # type: ignore[method-assign]
    with pytest.raises(CircuitOpen) as rejected:
        await run(guard, fake, chosen)
    assert "forced open by oncall" in rejected.value.message
    assert len(fake.replies) == 1 and fake.replies[0].response.released
    assert events[-1] == CircuitRejected("api", DEFAULT_ROUTE)


async def test_an_open_breaker_rejects_before_any_attempt_then_admits_one_probe_when_half_open() -> None:
    breaker = BreakerPolicy(consecutive_failures=1, open_for=30.0, jitter=0.0, half_open_probes=1)
    guard, fake, clock, _, store, chosen = setup(retry=RetryPolicy(attempts=0), breaker=breaker,
                                                 script=[UpstreamConnectError, 200])
    await run(guard, fake, chosen)
    with pytest.raises(CircuitOpen) as rejected:
        await run(guard, fake, chosen)
    assert rejected.value.retry_after == 30 and len(fake.replies) == 1
    clock.advance(30.0)
    fake.before_each = lambda: store.view(KEY).state
    assert (await run(guard, fake, chosen)).status == 200
    assert fake.before[-1] == State.HALF_OPEN, "the probe went out while half-open"
    assert store.view(KEY).state == State.CLOSED


async def test_the_sidecars_own_refusals_and_429s_are_not_breaker_failures() -> None:
    breaker = BreakerPolicy(consecutive_failures=1, open_for=30.0, jitter=0.0)
    guard, fake, _, _, store, chosen = setup(retry=RetryPolicy(attempts=0), breaker=breaker,
                                             script=[BodyTooLarge("too big"), 429, 404])
    for _ in range(3):
        await run(guard, fake, chosen)
    assert store.view(KEY).state == State.CLOSED


async def test_a_throttled_answer_is_retried_after_its_retry_after() -> None:
    policy = RetryPolicy(attempts=3, jitter=0.0, not_processed=frozenset({429}))
    guard, fake, clock, _, _, chosen = setup(retry=policy, script=[429, 200])
    fake_call = fake.__call__

    async def with_retry_after(call: str, timeout: float) -> Reply:
        reply = await fake_call(call, timeout)
        if reply.status == 429:
            reply.retry_after = "3"
        return reply

    reply = await guard.run(UPSTREAM, chosen, "POST", True, False, with_retry_after, "the request")
    assert (reply.status, reply.number) == (200, 2), "the route says a 429 proves a POST was not processed"
    assert clock.slept == [3.0]


async def test_what_a_route_needs_is_worked_out_once_and_a_reloaded_route_brings_its_own() -> None:
    """The same route object serves many requests from one preparation; after a reload (a new route of
    the same name) its breaker, retries and timeout are the new ones, and a request still goes through
    tenacity as soon as its first answer is retryable."""
    breaker = BreakerPolicy(consecutive_failures=2, open_for=30.0, jitter=0.0)
    guard, fake, clock, _, store, chosen = setup(breaker=breaker, script=[200, 200, 503, 200, 503, 503])
    assert [(await run(guard, fake, chosen)).number for _ in range(2)] == [1, 1]
    assert (await run(guard, fake, chosen)).number == 2, "a first-attempt 503 is still retried"
    assert clock.slept == [1.0]
    reloaded = route(retry=RetryPolicy(attempts=0), breaker=BreakerPolicy(consecutive_failures=1, open_for=30.0,
                                                                           jitter=0.0))
    reply = await run(guard, fake, reloaded)
    assert (reply.status, reply.number) == (503, 1), "the new route does not retry"
    assert store.view(KEY).state == State.OPEN, "and its breaker opens after one failure"
    with pytest.raises(CircuitOpen):
        await run(guard, fake, chosen)
    assert fake.timeouts == [10.0, 10.0, 10.0, 10.0, 10.0]


async def test_a_route_without_a_breaker_reports_nothing_to_the_store() -> None:
    guard, fake, _, events, store, chosen = setup(retry=RetryPolicy(attempts=0), script=[503, 503, 503])
    for _ in range(3):
        assert (await run(guard, fake, chosen)).status == 503
    assert store.view(KEY).failures == 0 and len(events) == 3
