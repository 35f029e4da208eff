"""Two sidecar processes sharing one Redis tell Slack about one outage once: one "open", one
"recovered". Each transition is emitted only by the replica whose atomic update made it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.fake_slack import FakeSlack
from tests.observe.conftest import slack_config
from tests.processes import SidecarProcess


async def get(http: aiohttp.ClientSession, sidecar: SidecarProcess) -> int:
    async with http.get(sidecar.url + "/api/x") as response:
        await response.read()
        return response.status


async def poll(predicate, deadline: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not await predicate():
        assert time.monotonic() < end, f"not reached within {deadline}s"
        await asyncio.sleep(0.05)


async def test_one_outage_seen_by_two_replicas_is_one_open_and_one_recovery_message(
    tmp_path: Path, redis_server, scripted, slack: FakeSlack
) -> None:  # type: ignore[no-untyped-def]
    upstream, url = scripted
    upstreams = {"api": {"url": url, "breaker": {"consecutive_failures": 3, "open_for": "1s", "jitter": 0}}}
    settings: dict[str, Any] = {
        "state": {"backend": "redis", "redis_url": redis_server.url, "redis_timeout": "50ms",
                  "key_prefix": f"rp-{tmp_path.name}:"},
        "alerts": slack_config(slack), "log": {"level": "info", "access": False}}
    replicas = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        replicas.append(SidecarProcess(tmp_path / name, upstreams, **settings))
    try:
        for replica in replicas:
            await replica.wait_ready()
        a, b = replicas
        upstream.status = 500
        async with aiohttp.ClientSession() as http:
            async def both_reject() -> bool:  # failures through both replicas until both fail fast
                statuses = [await get(http, a), await get(http, b)]
                return statuses == [503, 503] and upstream.hits >= 3

            await poll(both_reject, deadline=5.0)

            async def told(prefix: str) -> bool:
                return len(slack.texts(prefix)) >= 1

            await poll(lambda: told("🔴 api circuit open"), deadline=5.0)
            upstream.status = 200

            async def both_pass() -> bool:
                return [await get(http, a), await get(http, b)] == [200, 200]

            await poll(both_pass, deadline=5.0)
            await poll(lambda: told("✅ api recovered"), deadline=5.0)
            await asyncio.sleep(1.5)  # room for a duplicate to arrive, if either replica sent one

        texts = slack.texts()
        assert len(texts) == 2, texts
        assert texts[0].startswith("🔴 api circuit open: 3 consecutive failures. upstream api, route default · "
                                   "last error: HTTP 500 · fails fast for 1s, then probes")
        assert texts[1].startswith("✅ api recovered")
        assert [call.method for call in slack.calls].count("auth.test") == 2, "each replica checks its token"

        started = time.monotonic()
        for replica in replicas:
            replica.signal()
        for replica in replicas:
            assert await replica.wait_exit(timeout=10.0) == 0
        assert time.monotonic() - started < 5.0, "Slack alerts do not hold up shutdown"
        for replica in replicas:
            assert "Slack alerts go to #alerts as resilience-proxy" in replica.log, "auth.test passed"
            assert "xoxb" not in replica.log and "Traceback" not in replica.log, replica.log
    finally:
        for replica in replicas:
            replica.stop()
