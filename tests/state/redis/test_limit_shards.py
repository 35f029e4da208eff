"""The cluster's rate-limit rules without Redis: one slot per limit key, and what a refund gives back."""

from __future__ import annotations

from redis.crc import key_slot

from proxy.config.policy_values import KeyKind, LimitPolicy, Rate
from proxy.policy.ratelimit import Check
from proxy.state.redis.limit_shards import by_slot, refund, refunds, shard_key


def check(name: str, *, key: str = "-", shadow: bool = False) -> Check:
    rate = Rate(10, 1.0, 9)  # interval 100_000 µs
    return Check(LimitPolicy(name, KeyKind.GLOBAL, rate, shadow=shadow), "twilio/sms", f"{name}:{key}", rate)


def test_each_limit_key_is_its_own_hash_tag() -> None:
    assert shard_key("rp:", check("per_org", key="acme")) == "rp:{rl:twilio/sms:per_org:acme}"
    keys = [shard_key("rp:", check("per_org", key=org)) for org in ("acme", "globex", "initech")]
    assert len({key_slot(key.encode()) for key in keys}) == 3


def test_keys_are_grouped_by_slot_in_first_seen_order() -> None:
    same = "rp:{rl:x}"
    keys = [same, "rp:{rl:y}", same + ":other", "rp:{rl:z}"]
    assert by_slot(keys) == [[0, 2], [1], [3]]


def test_a_refund_gives_back_the_charge_less_the_time_it_has_used_up() -> None:
    interval, charged_tat = 100_000, 1_000_300_000
    assert refund(interval, charged_tat, now=1_000_000_000) == interval  # the TAT is far ahead: all of it
    assert refund(interval, charged_tat, now=1_000_250_000) == 50_000    # half of the charge has run out
    assert refund(interval, charged_tat, now=1_000_400_000) == 0          # the bucket is full again


ALLOWED = ("1", "5", "300000", "0")
DENIED = ("0", "0", "900000", "100000")


def test_only_the_slots_that_charged_a_denied_request_are_refunded() -> None:
    checks = [check("a"), check("b"), check("c")]
    groups = [[0], [1], [2]]
    # b denied: a and c charged (their TAT is now + 300 ms), b charged nothing.
    assert refunds(checks, groups, [ALLOWED, DENIED, ALLOWED], charged_at=0, now=0) == [[(0, 100_000)], [(2, 100_000)]]
    # A slot whose own script denied charged nothing there, not even its allowed buckets.
    assert refunds(checks, [[0, 1], [2]], [ALLOWED, DENIED, ALLOWED], charged_at=0, now=0) == [[(2, 100_000)]]


def test_a_passed_request_and_a_shadow_limit_refund_nothing() -> None:
    checks = [check("a"), check("shadow", shadow=True)]
    assert refunds(checks, [[0], [1]], [ALLOWED, ALLOWED], charged_at=0, now=0) == []
    assert refunds(checks, [[0], [1]], [ALLOWED, DENIED], charged_at=0, now=0) == [], "a shadow limit never denies"
