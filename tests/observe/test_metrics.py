"""``/metrics`` after scripted traffic through an in-process sidecar: exact counts for every family.

The default registry is process-global, so each test uses an upstream name of its own; families
without an upstream label are compared before and after.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from proxy.events import AlertSent, ConfigReloaded
from tests.conftest import StartSidecar, admin_url, base_url
from tests.metrics_text import assert_promtool_accepts, sample_value, samples

FAST = {"initial": "10ms", "max": "10ms", "jitter": 0}


def policies(url: str) -> tuple[str, dict[str, Any]]:
    """One upstream, unique per test, with a route per behaviour under test."""
    name = f"met{uuid.uuid4().hex[:8]}"
    return name, {name: {
        "url": url, "prefix": "/m", "breaker": False,
        "routes": [
            {"name": "flaky", "path": "/flaky/**",
             "breaker": {"consecutive_failures": 3, "open_for": "60s", "jitter": 0}},
            {"name": "limited", "path": "/limited/**",
             "rate_limits": [{"name": "per-ip", "key": "ip", "limit": 3, "per": "1h"}]},
            {"name": "retried", "path": "/retried/**",
             "retry": {"attempts": 2, "on": [503], "backoff": FAST, "budget": {"ratio": "20%", "min_per_second": 0}}},
        ],
    }}


async def scrape(http: aiohttp.ClientSession, sidecar: Any) -> str:
    async with http.get(admin_url(sidecar) + "/metrics") as response:
        assert response.status == 200
        return await response.text()


async def drive(http: aiohttp.ClientSession, sidecar: Any, upstream: Any) -> None:
    """Successes, upstream 5xx, an opened breaker failing fast, 429s, retries made and refused."""

    async def call(path: str, method: str = "GET", script: list[int] | None = None) -> int:
        upstream.script = list(script or [])
        async with http.request(method, base_url(sidecar) + "/m" + path) as response:
            await response.read()
            return response.status

    # Default route (no breaker, no retries): methods, including one outside the known set, and a 429.
    assert [await call("/plain") for _ in range(4)] == [200] * 4
    assert await call("/plain", "POST") == 200
    assert await call("/plain", "PROPFIND") == 200
    assert await call("/plain", script=[429]) == 429
    # A breaker that opens after 3 upstream 500s, then fails fast twice.
    assert [await call("/flaky/x", "POST", [500]) for _ in range(3)] == [500] * 3
    assert [await call("/flaky/x", "POST") for _ in range(2)] == [503] * 2
    # A rate limit of 3 per hour and per client address.
    assert [await call("/limited/x") for _ in range(5)] == [200] * 3 + [429] * 2
    # Retries: 5 successes give a 20% budget room for one retry; the next 503 is refused by the budget;
    # 10 more successes make room for two retries, after which the attempts are exhausted.
    assert [await call("/retried/x") for _ in range(5)] == [200] * 5
    assert await call("/retried/x", script=[503, 200]) == 200
    assert await call("/retried/x", script=[503]) == 503
    assert [await call("/retried/x") for _ in range(10)] == [200] * 10
    assert await call("/retried/x", script=[503, 503, 503]) == 503


async def test_every_family_counts_scripted_traffic_exactly(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    name, config = policies(url)
    sidecar = await start_sidecar(config)
    await drive(http, sidecar, upstream)
    text = await scrape(http, sidecar)

    def value(family: str, **labels: str) -> float:
        return sample_value(text, "resilience_proxy_" + family, upstream=name, **labels)

    requests = {(s["route"], s["method"], s["status_class"]): v
                for s, v in samples(text, "resilience_proxy_requests_total", upstream=name)}
    assert requests == {
        ("default", "GET", "2xx"): 4, ("default", "POST", "2xx"): 1, ("default", "OTHER", "2xx"): 1,
        ("default", "GET", "4xx"): 1,
        ("flaky", "POST", "5xx"): 5,
        ("limited", "GET", "2xx"): 3, ("limited", "GET", "4xx"): 2,
        ("retried", "GET", "2xx"): 16, ("retried", "GET", "5xx"): 2,
    }
    assert value("request_duration_seconds_count") == 7 + 5 + 5 + 18
    assert value("request_duration_seconds_count", route="retried") == 18
    assert value("request_duration_seconds_bucket", route="retried", le="+Inf") == 18

    attempts = {(s["route"], s["result"]): v for s, v in samples(text, "resilience_proxy_upstream_attempts_total",
                                                                 upstream=name)}
    assert attempts == {("default", "2xx"): 6, ("default", "4xx"): 1, ("flaky", "5xx"): 3, ("limited", "2xx"): 3,
                        ("retried", "2xx"): 16, ("retried", "5xx"): 5}
    assert value("upstream_attempt_duration_seconds_count") == 7 + 3 + 3 + 21

    assert {s["reason"]: v for s, v in samples(text, "resilience_proxy_retries_total", upstream=name)} == {"503": 3}
    assert {s["reason"]: v for s, v in samples(text, "resilience_proxy_retries_refused_total", upstream=name)} == {
        "retry_budget_exhausted": 1, "attempts_exhausted": 1}

    assert value("breaker_state", route="flaky") == 2
    assert [s["route"] for s, _ in samples(text, "resilience_proxy_breaker_state", upstream=name)] == ["flaky"], \
        "only routes with a breaker have a state"
    assert {(s["route"], s["from"], s["to"]): v for s, v in samples(
        text, "resilience_proxy_breaker_transitions_total", upstream=name)} == {("flaky", "closed", "open"): 1}
    assert value("breaker_rejections_total", route="flaky") == 2

    assert {s["outcome"]: v for s, v in samples(text, "resilience_proxy_rate_limit_decisions_total", upstream=name,
                                                route="limited", limit="per-ip")} == {"allowed": 3, "rejected": 2}
    assert value("upstream_throttled_total", route="default", reason="429") == 1

    assert sample_value(text, "resilience_proxy_state_backend_up") == 1
    assert sample_value(text, "resilience_proxy_in_flight_requests") == 0
    assert sample_value(text, "process_resident_memory_bytes") > 0
    assert "_created" not in text, "created series are off: one series fewer per child"


async def test_a_scrape_after_every_kind_of_event_passes_promtool_check_metrics(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    sidecar = await start_sidecar(policies(url)[1])
    await drive(http, sidecar, upstream)
    sidecar.events.emit(AlertSent("slack", "breaker_open", "sent"))
    sidecar.events.emit(ConfigReloaded("ok"))
    assert_promtool_accepts(await scrape(http, sidecar))


async def test_alerts_and_config_reloads_are_counted_from_their_events(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(policies(url)[1])
    before = await scrape(http, sidecar)
    for event in (AlertSent("slack", "breaker", "sent"), AlertSent("slack", "breaker", "sent"),
                  AlertSent("slack", "backend", "dropped"), AlertSent("slack", "breaker", "failed"),
                  ConfigReloaded("ok"), ConfigReloaded("error", "bad yaml")):
        sidecar.events.emit(event)
    after = await scrape(http, sidecar)

    def delta(name: str, **labels: str) -> float:
        return sample_value(after, name, **labels) - sample_value(before, name, **labels)

    assert delta("resilience_proxy_alerts_total", channel="slack", result="sent") == 2
    assert delta("resilience_proxy_alerts_total", channel="slack", result="dropped") == 1
    assert delta("resilience_proxy_alerts_total", channel="slack", result="failed") == 1
    assert delta("resilience_proxy_config_reloads_total", result="ok") == 1
    assert delta("resilience_proxy_config_reloads_total", result="error") == 1


async def test_in_flight_requests_are_sampled_at_scrape_time(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstream.delay = 0.5
    sidecar = await start_sidecar(policies(url)[1])
    calls = [asyncio.create_task(http.get(base_url(sidecar) + "/m/slow")) for _ in range(3)]
    while upstream.hits < 3:
        await asyncio.sleep(0.01)
    assert sample_value(await scrape(http, sidecar), "resilience_proxy_in_flight_requests") == 3
    for response in await asyncio.gather(*calls):
        response.release()
    assert sample_value(await scrape(http, sidecar), "resilience_proxy_in_flight_requests") == 0
