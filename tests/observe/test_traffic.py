"""The last minute per route, as the status page shows it: fed by events, moved on by an injected clock."""

from __future__ import annotations

import pytest

from proxy.events import LimitDecision, RequestEnded, RetryDecided
from proxy.observe.traffic import LATENCY_BOUNDS, RecentTraffic, quantile

START = 1000.0


def ended(status: int = 200, seconds: float = 0.010, route: str | None = "sms", error: str | None = None,
          upstream: str | None = "twilio") -> RequestEnded:
    return RequestEnded("rid", upstream, route, "POST", status, seconds, 1, error)


def test_rate_errors_latency_and_retries_over_the_window() -> None:
    traffic = RecentTraffic(START)
    for i in range(100):
        traffic.request_ended(ended(503 if i % 4 == 0 else 200, seconds=0.010 if i < 98 else 2.0))
    traffic.retry_decided(RetryDecided("twilio", "sms", True, "503"))
    traffic.retry_decided(RetryDecided("twilio", "sms", False, "attempts exhausted"))
    traffic.advance(START + 50)
    stats = traffic.route("twilio", "sms", START + 50)
    assert (stats.seconds, stats.requests, stats.failures, stats.retries) == (50, 100, 25, 1)
    assert stats.rps == 2.0
    assert stats.error_ratio == 0.25
    assert stats.p50 == pytest.approx(0.010, rel=0.25), "within a bucket (25%) of the truth"
    assert stats.p99 == pytest.approx(2.0, rel=0.25)


def test_the_sidecars_own_refusals_say_nothing_about_the_upstream() -> None:
    """A rate-limit 429 or a client that left is a request, not an upstream failure nor a success."""
    traffic = RecentTraffic(START)
    traffic.request_ended(ended(429, error="http_request_denied"))
    traffic.request_ended(ended(499, error="client_disconnected"))
    traffic.request_ended(ended(503, error="destination_unavailable"))  # an open breaker's fast failure
    stats = traffic.route("twilio", "sms", START + 1)
    assert (stats.requests, stats.judged, stats.failures) == (3, 1, 1)


def test_seconds_leave_the_window_after_a_minute() -> None:
    traffic = RecentTraffic(START)
    traffic.request_ended(ended())
    traffic.advance(START + 1)
    for _ in range(3):
        traffic.request_ended(ended(500))
    traffic.advance(START + 30)
    assert traffic.route("twilio", "sms", START + 30).requests == 4
    traffic.advance(START + 60.5)
    stats = traffic.route("twilio", "sms", START + 60.5)
    assert (stats.requests, stats.failures) == (3, 3), "the first second is gone, the second one stays"
    traffic.advance(START + 200)
    stats = traffic.route("twilio", "sms", START + 200)
    assert (stats.requests, stats.p50, stats.error_ratio) == (0, None, None)


def test_just_after_start_the_rate_is_over_the_time_since() -> None:
    traffic = RecentTraffic(START)
    for _ in range(10):
        traffic.request_ended(ended())
    assert traffic.route("twilio", "sms", START + 5).rps == 2.0
    assert traffic.route("twilio", "sms", START + 0.1).seconds == 1.0, "never a rate over less than a second"


def test_limit_decisions_by_limit_allowed_limited_shadow() -> None:
    traffic = RecentTraffic(START)
    for outcome in ("allowed", "allowed", "allowed_backend_down", "rejected", "rejected_backend_down"):
        traffic.limit_decided(LimitDecision("twilio", "sms", "per-org", outcome))
    traffic.limit_decided(LimitDecision("twilio", "sms", "per-ip", "shadow_rejected"))
    traffic.advance(START + 2)
    traffic.limit_decided(LimitDecision("twilio", "sms", "per-org", "rejected"))
    stats = traffic.route("twilio", "sms", START + 10)
    assert {name: (c.allowed, c.limited, c.shadow_limited) for name, c in stats.limits.items()} == {
        "per-ip": (0, 0, 1), "per-org": (3, 3, 0)}
    assert stats.limited_per_second == pytest.approx(3 / 10)


def test_routes_are_apart_and_requests_without_a_route_are_not_shown() -> None:
    traffic = RecentTraffic(START)
    traffic.request_ended(ended(route="sms"))
    traffic.request_ended(ended(route="whatsapp"))
    traffic.request_ended(ended(route="whatsapp"))
    traffic.request_ended(ended(route=None))
    traffic.request_ended(ended(upstream=None, route=None))
    assert traffic.route("twilio", "sms", START + 1).requests == 1
    assert traffic.route("twilio", "whatsapp", START + 1).requests == 2
    assert traffic.route("google", "default", START + 1).requests == 0


def test_quantiles_interpolate_within_a_bucket_and_cap_at_the_last_bound() -> None:
    buckets = [0] * (len(LATENCY_BOUNDS) + 1)
    assert quantile(buckets, 0.5) is None
    buckets[0] = 10
    assert quantile(buckets, 0.5) == pytest.approx(LATENCY_BOUNDS[0] / 2)
    buckets[-1] = 1000
    assert quantile(buckets, 0.99) == LATENCY_BOUNDS[-1]
