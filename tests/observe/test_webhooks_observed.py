"""Inbound webhooks as operators see them, through an in-process sidecar on a real redis-server: exact
counts in ``/metrics`` after scripted provider traffic, the sampled queue gauges, and the Slack alerts
(dead letters told once then as a count, the backlog told and cleared) on a fake Slack.

The default registry is process-global, so each test uses a webhook name of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml

from proxy.config.load import load_config
from proxy.runtime.sidecar import Sidecar
from tests.conftest import admin_url, free_port
from tests.fake_slack import FakeSlack
from tests.metrics_text import assert_promtool_accepts, sample_value
from tests.observe.conftest import slack_config
from tests.web.webhook_rig import App, app_server, signed

TOKEN = "twilio-auth-token-0123456789abcd"
PATH = "/hooks/twilio/status"
FAST = {"initial": "10ms", "multiplier": 1, "max": "10ms"}


class Rig:
    """A sidecar whose one webhook (a unique name) delivers to ``app``; posts signed status callbacks."""

    def __init__(self, sidecar: Sidecar, name: str, public_url: str) -> None:
        self.sidecar, self.name, self.public_url = sidecar, name, public_url

    @property
    def url(self) -> str:
        assert self.sidecar.webhooks_address is not None
        return f"http://127.0.0.1:{self.sidecar.webhooks_address.port}{PATH}"

    async def post(self, status: str, sid: str, *, forged: bool = False, pad: int = 0) -> int:
        params = [("AccountSid", "AC1"), ("MessageSid", sid), ("MessageStatus", status), ("To", "+15005550006")]
        if pad:
            params.append(("Body", "x" * pad))
        headers = signed(params, self.public_url, "not-the-token" if forged else TOKEN)
        async with aiohttp.ClientSession() as http, http.post(self.url, data=urlencode(params),
                                                              headers=headers) as response:
            await response.read()
            return response.status

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(admin_url(self.sidecar) + "/metrics") as response:
            return await response.text()

    def value(self, text: str, family: str, **labels: str) -> float:
        return sample_value(text, family, webhook=self.name, **labels)


StartRig = Callable[..., Any]


@pytest.fixture
async def start_rig(tmp_path: Path, redis_url: str) -> AsyncIterator[StartRig]:
    started: list[Sidecar] = []

    async def start(deliver_to: str, *, alerts: dict[str, Any] | None = None, **hook: Any) -> Rig:
        name = f"wh{uuid.uuid4().hex[:8]}"
        port = free_port()
        public_url = f"http://127.0.0.1:{port}{PATH}"
        webhook = {"path": PATH, "deliver_to": deliver_to, "provider": "twilio",
                   "twilio": {"auth_token": TOKEN, "public_url": public_url}, **hook}
        (tmp_path / "policies").mkdir(exist_ok=True)
        (tmp_path / "policies" / "hooks.yaml").write_text(yaml.safe_dump({
            "upstreams": {"twilio": {"url": "https://api.twilio.com", "prefix": "/twilio"}},
            "webhooks": {name: webhook}}))
        config: dict[str, Any] = {"listen": "127.0.0.1:0", "admin": {"listen": "127.0.0.1:0"},
                                  "state": {"backend": "redis", "redis_url": redis_url, "redis_timeout": "1s"},
                                  "webhooks": {"listen": f"127.0.0.1:{port}"}, "policies": ["policies/"],
                                  "log": {"level": "warning", "access": False}}
        if alerts:
            config["alerts"] = alerts
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        sidecar = Sidecar(load_config(tmp_path / "config.yaml"))
        await sidecar.start()
        started.append(sidecar)
        return Rig(sidecar, name, public_url)

    yield start
    for sidecar in started:
        await sidecar.close()


async def until(check: Callable[[], Any], deadline: float = 15.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


class ScriptedApp(App):
    """200 for delivered, 400 for failed (dead letter at once), 503 for undelivered (retried, then dead)."""

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[name-defined]
        body = await request.read()
        self.received.append((request.method, request.path_qs, dict(request.headers), body))
        status = 400 if b"MessageStatus=failed" in body else 503 if b"MessageStatus=undelivered" in body else 200
        return aiohttp.web.Response(status=status)  # type: ignore[attr-defined]


async def test_every_webhook_family_counts_scripted_traffic_exactly(start_rig: StartRig) -> None:
    app = ScriptedApp()
    async with app_server(app) as app_url:
        rig = await start_rig(app_url + "/twilio/status", max_body="1KiB",
                              delivery={"attempts": 2, "backoff": FAST, "timeout": "2s"})
        assert [await rig.post("delivered", f"SM{i}") for i in range(3)] == [200] * 3
        assert await rig.post("delivered", "SM0") == 200        # a duplicate, answered like the original
        assert await rig.post("failed", "SM3") == 200           # the app will answer 400: dead letter at once
        assert await rig.post("undelivered", "SM4") == 200      # the app will answer 503 twice: dead letter
        assert await rig.post("delivered", "SM5", forged=True) == 403
        assert await rig.post("delivered", "SM6", pad=2048) == 413

        async def settled() -> str | None:
            text = await rig.metrics()
            done = sum(rig.value(text, "resilience_proxy_webhook_deliveries_total", outcome=o)
                       for o in ("completed", "dead_letter"))
            return text if done >= 5 and rig.value(text, "resilience_proxy_webhook_queue_depth") == 0 else None

        text = await until(settled)
    received = {r: rig.value(text, "resilience_proxy_webhooks_received_total", result=r)
                for r in ("accepted", "duplicate", "rejected_signature", "too_large")}
    assert received == {"accepted": 5, "duplicate": 1, "rejected_signature": 1, "too_large": 1}
    assert rig.value(text, "resilience_proxy_webhook_answer_seconds_count") == 8
    attempts = {r: rig.value(text, "resilience_proxy_webhook_attempts_total", result=r)
                for r in ("completed", "failed", "dead_letter")}
    assert attempts == {"completed": 3, "failed": 1, "dead_letter": 2}
    assert rig.value(text, "resilience_proxy_webhook_deliveries_total", outcome="completed") == 3
    assert rig.value(text, "resilience_proxy_webhook_deliveries_total", outcome="dead_letter") == 2
    assert rig.value(text, "resilience_proxy_webhook_dead_letters_total") == 2
    assert rig.value(text, "resilience_proxy_webhook_end_to_end_seconds_count") == 3
    assert rig.value(text, "resilience_proxy_webhook_oldest_pending_seconds") == 0
    assert len(app.received) == 3 + 1 + 2
    assert_promtool_accepts(text)
    # The admin port of the same sidecar tells the same story, without a payload.
    async with aiohttp.ClientSession() as http:
        async with http.get(admin_url(rig.sidecar) + "/admin/webhooks") as response:
            [line] = [w for w in (await response.json())["webhooks"] if w["name"] == rig.name]
        async with http.get(admin_url(rig.sidecar) + f"/admin/webhooks/{rig.name}/events?status=dead_letter") as response:
            dead = (await response.json())["events"]
            raw = await response.text()
    assert (line["counts"]["completed"], line["counts"]["dead_letter"], line["depth"]) == (3, 2, 0)
    assert sorted((e["attempts"], e["event_type"]) for e in dead) == [(1, "failed"), (2, "undelivered")]
    assert "+15005550006" not in raw and "MessageSid" not in raw


async def test_the_queue_gauges_follow_a_backlog_and_the_dead_letter_counter_starts_at_zero(
        start_rig: StartRig) -> None:
    down = f"http://127.0.0.1:{free_port()}/twilio/status"  # nothing listens: every attempt is retried later
    rig = await start_rig(down, delivery={"backoff": {"initial": "1m", "max": "1m"}})
    for i in range(3):
        assert await rig.post("sent", f"SM{i}") == 200

    async def backlog() -> str | None:
        text = await rig.metrics()
        return text if rig.value(text, "resilience_proxy_webhook_queue_depth") == 3 else None

    text = await until(backlog)
    assert rig.value(text, "resilience_proxy_webhook_oldest_pending_seconds") >= 0
    assert f'resilience_proxy_webhook_dead_letters_total{{webhook="{rig.name}"}} 0.0' in text

    async def aged() -> bool:
        return rig.value(await rig.metrics(), "resilience_proxy_webhook_oldest_pending_seconds") >= 1.0

    await until(aged)


async def test_dead_letters_are_told_once_then_as_a_count_and_a_backlog_is_told(
        start_rig: StartRig, slack: FakeSlack, quick_delivery: Any) -> None:
    app = ScriptedApp()
    async with app_server(app) as app_url:
        rig = await start_rig(app_url + "/twilio/status",
                              alerts=slack_config(slack, flap_interval="2s", webhook_backlog_age="1s"))
        for i in range(4):
            assert await rig.post("failed", f"SM{i}") == 200

        async def told(count: int) -> bool:
            return len(slack.texts("dead letter")) >= count

        await until(lambda: told(2))
    first, summary = slack.texts("dead letter")
    assert first.startswith(f"📮 {rig.name} webhook event moved to dead letter")
    assert f"GET /admin/webhooks/{rig.name}/events?status=dead_letter" in first
    assert summary.startswith(f"📮 {rig.name} 3 more webhook events moved to dead letter in the last ")
    for text in slack.texts():
        assert "+15005550006" not in text and TOKEN not in text


async def test_a_backlog_older_than_the_threshold_is_told(
        start_rig: StartRig, slack: FakeSlack, quick_delivery: Any) -> None:
    down = f"http://127.0.0.1:{free_port()}/twilio/status"
    rig = await start_rig(down, delivery={"backoff": {"initial": "1m", "max": "1m"}},
                          alerts=slack_config(slack, webhook_backlog_age="1s"))
    assert await rig.post("sent", "SM1") == 200

    async def told() -> bool:
        return bool(slack.texts("oldest undelivered"))

    await until(told)
    [text] = slack.texts("oldest undelivered")
    assert text.startswith(f"⏳ {rig.name} oldest undelivered webhook event is ")
    assert "1 event waiting" in text and "alert above 1s" in text
