"""Rate limits through a running sidecar (memory backend), against a scripted upstream on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import aiohttp
import aiohttp.web

from tests.conftest import StartSidecar, admin_url, base_url
from tests.metrics_text import sample_value

MESSAGES = "/2010-04-01/Accounts/AC123/Messages.json"


def upstream(url: str, limits: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """An upstream with a unique name, so that metrics of one test never mix with another's."""
    name = f"up{uuid.uuid4().hex[:8]}"
    return {name: {"url": url, "prefix": "/api", "breaker": False, "rate_limits": limits, **extra}}


async def call(http: aiohttp.ClientSession, sidecar: Any, path: str = "/things", method: str = "GET",
               **headers: str) -> aiohttp.ClientResponse:
    async with http.request(method, base_url(sidecar) + "/api" + path, headers=headers) as response:
        await response.read()
        return response


async def statuses(http: aiohttp.ClientSession, sidecar: Any, count: int, **headers: str) -> list[int]:
    return [(await call(http, sidecar, **headers)).status for _ in range(count)]


async def metrics(http: aiohttp.ClientSession, sidecar: Any) -> str:
    async with http.get(admin_url(sidecar) + "/metrics") as response:
        return await response.text()


async def test_a_rejected_call_gets_429_with_retry_after_ratelimit_fields_and_proxy_status(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    target, url = scripted
    sidecar = await start_sidecar(upstream(url, [{"name": "per-org-hourly", "key": "org", "limit": 3, "per": "1h"}]))

    accepted = [await call(http, sidecar, **{"X-Org-Id": "acme"}) for _ in range(3)]
    assert [r.status for r in accepted] == [200, 200, 200]
    assert [r.headers["RateLimit-Remaining"] for r in accepted] == ["2", "1", "0"]
    assert accepted[0].headers["RateLimit-Limit"] == "3"
    assert accepted[0].headers["RateLimit-Reset"] == "1200"  # one call of 3/h takes 20 minutes to earn back
    assert accepted[0].headers["RateLimit-Policy"] == "3;w=3600"

    rejected = await call(http, sidecar, **{"X-Org-Id": "acme"})
    assert rejected.status == 429
    assert rejected.headers["Retry-After"] == "1200"
    assert rejected.headers["Proxy-Status"] == (
        'resilience-proxy; error=http_request_denied; details="rate limit per-org-hourly"')
    assert (rejected.headers["RateLimit-Limit"], rejected.headers["RateLimit-Remaining"],
            rejected.headers["RateLimit-Reset"]) == ("3", "0", "3600")
    async with http.get(base_url(sidecar) + "/api/things", headers={"X-Org-Id": "acme"}) as again:
        body = await again.json()
    assert body["status"] == 429 and body["code"] == "http_request_denied"
    assert body["message"] == "rate limit per-org-hourly exceeded (3 per 1h); retry in 1200s"
    assert target.hits == 3, "a rejected call never reaches the upstream"


async def test_one_org_limited_while_another_passes_and_rejections_spend_no_quota(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(upstream(url, [
        {"name": "per-org", "key": "org", "limit": 2, "per": "1h"},
        {"name": "everyone", "key": "global", "limit": 5, "per": "1h"},
    ]))
    assert await statuses(http, sidecar, 4, **{"X-Org-Id": "a"}) == [200, 200, 429, 429]
    # org a's two rejections were not charged to the global limit: 3 of its 5 calls are left
    assert await statuses(http, sidecar, 4, **{"X-Org-Id": "b"}) == [200, 200, 429, 429]
    assert await statuses(http, sidecar, 2, **{"X-Org-Id": "c"}) == [200, 429]
    rejected = await call(http, sidecar, **{"X-Org-Id": "d"})
    assert rejected.status == 429
    assert 'details="rate limit everyone"' in rejected.headers["Proxy-Status"]


async def test_accepted_answers_show_the_most_restrictive_limit(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(upstream(url, [
        {"name": "roomy", "key": "global", "limit": 100, "per": "1s"},
        {"name": "tight", "key": "org", "limit": 10, "per": "1m", "burst": 1},
    ]))
    response = await call(http, sidecar, **{"X-Org-Id": "a"})
    assert (response.headers["RateLimit-Limit"], response.headers["RateLimit-Remaining"],
            response.headers["RateLimit-Policy"]) == ("10", "1", "10;w=60")


async def test_basic_auth_user_and_path_capture_keys(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    target, url = scripted
    sidecar = await start_sidecar(upstream(url, [
        {"name": "per-account", "key": "basic_auth_user", "limit": 2, "per": "1h"},
    ], routes=[{"name": "events", "path": "/calendars/{calendarId}/events",
                "rate_limits": [{"name": "per-calendar", "key": "path:calendarId", "limit": 1, "per": "1m"}]}]))

    def auth(user: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret-token".encode()).decode()}

    assert [(await call(http, sidecar, **auth("AC1"))).status for _ in range(3)] == [200, 200, 429]
    assert (await call(http, sidecar, **auth("AC2"))).status == 200

    assert (await call(http, sidecar, "/calendars/team%40x.com/events", **auth("AC3"))).status == 200
    second = await call(http, sidecar, "/calendars/team%40x.com/events", **auth("AC3"))
    assert second.status == 429 and 'details="rate limit per-calendar"' in second.headers["Proxy-Status"]
    assert (await call(http, sidecar, "/calendars/other/events", **auth("AC3"))).status == 200
    assert target.hits == 5


async def test_overrides_give_one_key_its_own_amount(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(upstream(url, [
        {"name": "per-org", "key": "org", "limit": 2, "per": "1h", "overrides": {"acme": 4, "big": {"limit": 1, "per": "1s"}}},
    ]))
    assert await statuses(http, sidecar, 5, **{"X-Org-Id": "acme"}) == [200, 200, 200, 200, 429]
    assert await statuses(http, sidecar, 3, **{"X-Org-Id": "small"}) == [200, 200, 429]
    big = await call(http, sidecar, **{"X-Org-Id": "big"})
    assert big.headers["RateLimit-Policy"] == "1;w=1"


async def test_a_missing_key_is_rejected_shared_or_skipped_as_configured(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    strict = await start_sidecar(upstream(url, [
        {"name": "per-tenant", "key": "header:X-Tenant", "limit": 5, "per": "1s", "on_missing_key": "reject"}]))
    missing = await call(http, strict)
    assert missing.status == 400
    assert missing.headers["Proxy-Status"] == (
        'resilience-proxy; error=http_request_denied; details="rate limit per-tenant needs header X-Tenant"')
    assert (await call(http, strict, **{"X-Tenant": "t1"})).status == 200

    shared = await start_sidecar(upstream(url, [{"name": "per-org", "key": "org", "limit": 2, "per": "1h"}]))
    assert await statuses(http, shared, 3) == [200, 200, 429], "requests without the header share one bucket"
    assert await statuses(http, shared, 1, **{"X-Org-Id": "named"}) == [200]

    skipped = await start_sidecar(upstream(url, [
        {"name": "per-org", "key": "org", "limit": 1, "per": "1h", "on_missing_key": "skip"}]))
    assert await statuses(http, skipped, 3) == [200, 200, 200]
    assert await statuses(http, skipped, 2, **{"X-Org-Id": "named"}) == [200, 429]


async def test_shadow_limits_let_everything_through_and_count_what_they_would_reject(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    target, url = scripted
    config = upstream(url, [{"name": "per-ip", "key": "ip", "limit": 2, "per": "15m", "shadow": True}])
    name = next(iter(config))
    sidecar = await start_sidecar(config)
    responses = [await call(http, sidecar, **{"X-Forwarded-For": "203.0.113.7"}) for _ in range(5)]
    assert [r.status for r in responses] == [200] * 5 and target.hits == 5
    assert "RateLimit-Limit" not in responses[0].headers, "a shadow limit is invisible to clients"
    text = await metrics(http, sidecar)
    counted = {outcome: sample_value(text, "resilience_proxy_rate_limit_decisions_total", upstream=name,
                                     limit="per-ip", outcome=outcome) for outcome in ("allowed", "shadow_rejected")}
    assert counted == {"allowed": 2, "shadow_rejected": 3}


async def test_client_ip_is_the_first_forwarded_address_else_the_peer(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(upstream(url, [{"name": "per-ip", "key": "ip", "limit": 1, "per": "1h"}]))
    assert await statuses(http, sidecar, 2, **{"X-Forwarded-For": "203.0.113.7, 10.0.0.1"}) == [200, 429]
    assert await statuses(http, sidecar, 1, **{"X-Forwarded-For": "203.0.113.8"}) == [200]
    assert await statuses(http, sidecar, 2) == [200, 429], "127.0.0.1, the peer, is a key like any other"


async def test_route_limits_apply_to_their_route_only(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar(upstream(url, [], routes=[
        {"name": "sms", "methods": ["POST"], "path": "/2010-04-01/Accounts/{account}/Messages.json",
         "rate_limits": [{"name": "sms-cap", "key": "global", "limit": 1, "per": "1h"}]}]))
    assert [(await call(http, sidecar, MESSAGES, "POST")).status for _ in range(2)] == [200, 429]
    assert await statuses(http, sidecar, 3) == [200, 200, 200]


async def test_an_upstream_429_with_retry_after_holds_the_bucket_for_that_long(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    target, url = scripted
    config = upstream(url, [{"name": "account", "key": "global", "limit": 100, "per": "1s"}])
    name = next(iter(config))
    sidecar = await start_sidecar(config)
    target.script = [429]
    target.headers = {"Retry-After": "30"}
    first = await call(http, sidecar)
    assert first.status == 429 and "Proxy-Status" not in first.headers, "the upstream's own 429 is relayed"
    held = await call(http, sidecar)
    assert held.status == 429 and held.headers["Retry-After"] == "30"
    assert 'details="rate limit account"' in held.headers["Proxy-Status"]
    assert target.hits == 1
    text = await metrics(http, sidecar)
    assert sample_value(text, "resilience_proxy_upstream_throttled_total", upstream=name, reason="429") == 1


async def test_google_403_rate_limit_exceeded_is_a_throttle_signal_and_is_relayed_intact(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, aiohttp_server
) -> None:  # type: ignore[no-untyped-def]
    reasons = iter(["rateLimitExceeded", "quotaExceeded"])

    async def google(request: aiohttp.web.Request) -> aiohttp.web.Response:
        error = {"error": {"code": 403, "message": "Rate Limit Exceeded", "errors": [
            {"domain": "usageLimits", "reason": next(reasons), "message": "Rate Limit Exceeded"}]}}
        return aiohttp.web.json_response(error, status=403)

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", google)
    server = await aiohttp_server(app)
    config = upstream(f"http://127.0.0.1:{server.port}", [])
    name = next(iter(config))
    sidecar = await start_sidecar(config)
    async with http.get(base_url(sidecar) + "/api/calendars/primary/events") as response:
        assert response.status == 403
        assert (await response.json())["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    async with http.get(base_url(sidecar) + "/api/calendars/primary/events") as response:
        assert json.loads(await response.read())["error"]["errors"][0]["reason"] == "quotaExceeded"
    text = await metrics(http, sidecar)
    assert sample_value(text, "resilience_proxy_upstream_throttled_total", upstream=name,
                        reason="rateLimitExceeded") == 1
    assert sample_value(text, "resilience_proxy_upstream_throttled_total", upstream=name) == 1, \
        "quotaExceeded is a daily quota, not a rate signal"
