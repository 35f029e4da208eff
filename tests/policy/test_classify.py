"""Reading Google's error reasons: throttling 403s and duplicate 409s (pure)."""

from __future__ import annotations

import json

from proxy.policy.classify import names_other_conflict, throttle_reason


def google(reason: str, code: int = 403) -> bytes:
    return json.dumps({"error": {"code": code, "message": "m",
                                 "errors": [{"domain": "usageLimits", "reason": reason, "message": "m"}]}}).encode()


def test_throttling_403s_are_told_from_quota_and_other_403s() -> None:
    assert throttle_reason(403, google("rateLimitExceeded")) == "rateLimitExceeded"
    assert throttle_reason(403, google("userRateLimitExceeded")) == "userRateLimitExceeded"
    assert throttle_reason(403, google("quotaExceeded")) is None
    assert throttle_reason(403, google("forbidden")) is None
    assert throttle_reason(403, b"not json") is None and throttle_reason(403, None) is None
    assert throttle_reason(429, None) == "429"
    assert throttle_reason(500, google("rateLimitExceeded")) is None


def test_a_409_is_another_conflict_only_when_its_reasons_say_so() -> None:
    assert not names_other_conflict(google("duplicate", 409))
    assert names_other_conflict(google("conflict", 409))
    assert not names_other_conflict(b'{"code": 409}') and not names_other_conflict(None)
