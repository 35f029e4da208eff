"""Sidecar-made answers per upstream error_format: vendor body, same headers; a 404 stays generic."""

from __future__ import annotations

import aiohttp

from tests.conftest import StartSidecar, base_url, free_port


async def test_vendor_bodies_keep_proxy_status_retry_after_and_ratelimit_headers(
        http: aiohttp.ClientSession, start_sidecar: StartSidecar) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sidecar = await start_sidecar({
        "twilio": {"url": dead, "prefix": "/twilio", "error_format": "twilio",
                   "breaker": {"consecutive_failures": 1, "open_for": "30s"}},
        "google": {"url": dead, "prefix": "/google", "error_format": "google", "breaker": False,
                   "rate_limits": [{"name": "project", "key": "global", "limit": 1, "per": "1h"}]},
    })
    url = base_url(sidecar)
    async with http.post(f"{url}/twilio/x", headers={"X-Request-Id": "req-1"}) as refused:
        assert refused.status == 502
        assert await refused.json() == {"code": 20502, "message": refused_message(await refused.json()),
                                        "more_info": "https://www.twilio.com/docs/api/errors", "status": 502}
    async with http.post(f"{url}/twilio/x", headers={"X-Request-Id": "req-2"}) as open_:
        body = await open_.json()
        assert (open_.status, body["code"], body["status"]) == (503, 20503, 503)
        assert body["message"] == "resilience-proxy: circuit twilio open"
        assert open_.headers["Proxy-Status"].startswith("resilience-proxy; error=destination_unavailable")
        assert open_.headers["X-Request-Id"] == "req-2" and int(open_.headers["Retry-After"]) >= 1
    async with http.get(f"{url}/google/a"):
        pass
    async with http.get(f"{url}/google/a") as limited:
        error = (await limited.json())["error"]
        assert limited.status == 429 and error["status"] == "RESOURCE_EXHAUSTED"
        assert error["errors"][0]["reason"] == "rateLimitExceeded"
        assert limited.headers["Retry-After"] and limited.headers["RateLimit-Limit"] == "1"
        assert limited.headers["Proxy-Status"].startswith("resilience-proxy; error=http_request_denied")
    async with http.get(f"{url}/nowhere") as missing:
        assert missing.status == 404 and (await missing.json())["code"] == "destination_not_found"


def refused_message(body: dict) -> str:
    assert body["message"].startswith("resilience-proxy: twilio: cannot connect to 127.0.0.1:")
    return body["message"]
