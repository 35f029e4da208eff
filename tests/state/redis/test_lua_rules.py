"""The Lua scripts against the pure rules: long random histories, replayed step by step on the
memory store and the Redis store with one FakeClock, must give the same admissions, views and
transitions (open times, reasons and versions included, to the last bit of every float)."""

from __future__ import annotations

import dataclasses

import random

import pytest

from proxy.clock import FakeClock
from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition
from proxy.policy.breaker import Action
from proxy.state.base import BreakerView
from proxy.state.memory import MemoryBreakerStore, view_of
from proxy.state.redis.breakers import RedisBreakerStore

POLICIES = {
    "twilio/consecutive": BreakerPolicy(consecutive_failures=3, open_for=10, open_for_max=45, jitter=0.2),
    "google/rate": BreakerPolicy(consecutive_failures=0, failure_rate=0.5, window=5, min_calls=4, open_for=7.5,
                                 open_for_max=20, open_multiplier=1.5, jitter=0.1, half_open_probes=2),
    "stripe/both": BreakerPolicy(consecutive_failures=4, failure_rate=0.3, window=3, min_calls=6, open_for=2.25,
                                 open_for_max=100, open_multiplier=3, jitter=0.0, half_open_probes=3),
}
STEPS = [0.0, 0.01, 0.3, 0.7, 1.0, 2.5, 4.0, 8.0, 31.0]


def truth(memory: MemoryBreakerStore, key: str) -> BreakerView:
    """The memory store's record, seen as a view. (Its own view keeps the old ``open_until`` when a
    half-open breaker gives its probe slots back, as the view is only rebuilt on a new version.)"""
    record = memory._records.get(key)
    return view_of(key, record) if record is not None else memory.view(key)


@pytest.mark.parametrize("seed", range(8))
async def test_random_histories_agree_with_the_pure_rules(redis_url: str, seed: int) -> None:
    chance = random.Random(seed)
    clock = FakeClock(1_800_000_000.0 + chance.random())
    memory = MemoryBreakerStore(clock=clock, random=lambda: 0.3)
    redis = RedisBreakerStore(redis_url, clock=clock, random=lambda: 0.3, timeout=2.0)
    emitted: dict[str, list[BreakerTransition]] = {"memory": [], "redis": []}
    memory.emit_to(emitted["memory"].append)
    redis.emit_to(emitted["redis"].append)
    await redis.start()
    try:
        for step in range(400):
            key = chance.choice(sorted(POLICIES))
            policy = POLICIES[key]
            roll = chance.random()
            if roll < 0.25:
                clock.advance(chance.choice(STEPS))
            elif roll < 0.5:
                expected, got = await memory.admit(key, policy), await redis.admit(key, policy)
                assert got == expected, f"step {step}: admit {key}"
            elif roll < 0.97:
                for _ in range(chance.randint(1, 8)):
                    failed, probe = chance.random() < 0.55, chance.random() < 0.25
                    memory.record(key, policy, failed, probe)
                    redis.record(key, policy, failed, probe)
                    clock.advance(chance.choice(STEPS[:4]))
                await redis.flush()
            else:
                action = chance.choice(list(Action))
                assert await redis.force(key, policy, action, "ops") == await memory.force(key, policy, action, "ops")
            # the hot path's local view carries no probe counts (scripts and pub/sub send the view only);
            # a fresh read, views(), does: checked at the end
            hot = dataclasses.replace(truth(memory, key), probes_in_flight=0)
            assert redis.view(key) == hot, f"step {step}: view of {key}"
            assert emitted["redis"] == emitted["memory"], f"step {step}: transitions"
        assert await redis.views(sorted(POLICIES)) == [truth(memory, key) for key in sorted(POLICIES)]
        assert {t.to_state for t in emitted["memory"]} >= {"open", "half_open", "closed"}, "a history worth checking"
        assert any(t.reason.startswith("failure rate") for t in emitted["memory"])
    finally:
        await redis.close()
    assert (redis.backend_up, redis.backend_failures) == (True, 0)
