"""Slack alerts from an in-process sidecar to a fake Slack on 127.0.0.1: what the messages say, and
that a rate-limiting, failing or hanging Slack never slows proxying or shutdown.

Timings are generous for a busy 2-core CI machine; waits are polls with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config.model import SlackSettings
from proxy.events import AlertSent, BackendChanged, BreakerTransition
from proxy.observe.alerts import slack as alerts
from proxy.observe.alerts.slack import Delivery, SlackAlerts
from proxy.runtime.sidecar import Sidecar
from tests.conftest import StartSidecar, base_url
from tests.fake_slack import FakeSlack
from tests.observe.conftest import SLACK_CHANNEL, SLACK_TOKEN, slack_config
from tests.redis_server import RedisServer

FAST_REQUEST = 0.25
"""A request through the sidecar to a loopback upstream, with room for a busy CI machine."""
APP_SECRET = "Bearer sk_live_app_secret_123"


class Upstream:
    """Answers 503 on the paths in ``failing``, 200 elsewhere."""

    def __init__(self) -> None:
        self.failing: set[str] = {"/sms"}

    async def handle(self, request: web.Request) -> web.Response:
        if request.path in self.failing:
            return web.json_response({"error": "down"}, status=503)
        return web.json_response({"ok": True})


@pytest.fixture
async def upstream(aiohttp_server) -> tuple[Upstream, str]:  # type: ignore[no-untyped-def]
    fake = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = await aiohttp_server(app)
    return fake, f"http://127.0.0.1:{server.port}"


def policies(url: str, open_for: str = "1s") -> dict[str, Any]:
    """``/api/sms`` has a breaker (3 failures, ``open_for``); everything else under ``/api`` has none."""
    return {"api": {"url": url, "breaker": False, "routes": [
        {"name": "sms", "path": "/sms",
         "breaker": {"consecutive_failures": 3, "open_for": open_for, "jitter": 0}}]}}


def record_alerts(sidecar: Sidecar) -> list[tuple[str, str]]:
    """(kind, result) of every AlertSent the sidecar emits from now on."""
    seen: list[tuple[str, str]] = []
    sidecar.events.subscribe(lambda e: seen.append((e.kind, e.result)) if isinstance(e, AlertSent) else None)
    return seen


async def status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url, headers={"Authorization": APP_SECRET}) as response:
        await response.read()
        return response.status


async def poll(predicate: Callable[[], bool], deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def trip(http: aiohttp.ClientSession, sidecar: Sidecar) -> None:
    """Three 503s open the sms breaker; the fourth call fails fast."""
    for _ in range(3):
        assert await status(http, base_url(sidecar) + "/api/sms") == 503
    assert await status(http, base_url(sidecar) + "/api/sms") == 503


async def recover(http: aiohttp.ClientSession, sidecar: Sidecar, fake: Upstream) -> None:
    fake.failing.clear()
    end = time.monotonic() + 5.0
    while await status(http, base_url(sidecar) + "/api/sms") != 200:
        assert time.monotonic() < end, "the breaker did not close"
        await asyncio.sleep(0.05)


async def slowest_request_while(http: aiohttp.ClientSession, sidecar: Sidecar, done: Callable[[], bool],
                                deadline: float = 8.0) -> float:
    """Proxy to a healthy route until ``done()``; the slowest request's seconds."""
    slowest, end = 0.0, time.monotonic() + deadline
    while not done():
        assert time.monotonic() < end, "condition not reached in time"
        started = time.monotonic()
        assert await status(http, base_url(sidecar) + "/api/healthy") == 200
        slowest = max(slowest, time.monotonic() - started)
        await asyncio.sleep(0.01)
    return slowest


async def test_an_outage_is_one_open_message_naming_everything_and_one_recovery_naming_its_downtime(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery
) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    sent = record_alerts(sidecar)
    await trip(http, sidecar)
    await poll(lambda: len(slack.delivered) == 1)

    [opened] = slack.delivered
    assert opened["channel"] == SLACK_CHANNEL
    assert opened["text"].startswith("🔴 sms circuit open: 3 consecutive failures. upstream api, route sms · "
                                     "last error: HTTP 503 · fails fast for 1s, then probes · ")
    section, context = opened["blocks"]
    assert section["text"]["text"] == "🔴 *sms* circuit open: 3 consecutive failures"
    assert context["elements"][0]["text"].startswith(
        "upstream api, route sms · last error: HTTP 503 · fails fast for 1s, then probes · ")

    await recover(http, sidecar, fake)
    await poll(lambda: len(slack.delivered) == 2)
    recovered = slack.delivered[1]
    assert re.match(r"✅ sms recovered after [12]s\. upstream api, route sms · 1 probe\(s\) succeeded · ",
                    recovered["text"]), recovered["text"]
    assert recovered["blocks"][0]["text"]["text"] in ("✅ *sms* recovered after 1s", "✅ *sms* recovered after 2s")

    assert [call.method for call in slack.calls] == ["auth.test", "chat.postMessage", "chat.postMessage"]
    assert {call.authorization for call in slack.calls} == {f"Bearer {SLACK_TOKEN}"}
    bodies = json.dumps([call.body for call in slack.calls])
    assert SLACK_TOKEN not in bodies and "xoxb" not in bodies, "the token travels in the header only"
    assert "sk_live" not in bodies, "nothing from the proxied requests' headers"
    assert sent == [("breaker_open", "sent"), ("breaker_recovered", "sent")]


async def test_a_429_from_slack_is_retried_after_its_retry_after_while_proxying_stays_fast(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery
) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    slack.script = ["429:1"]
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    sent = record_alerts(sidecar)
    await trip(http, sidecar)
    # Slack records the post before the sidecar reads its answer and counts it sent: wait for both.
    slowest = await slowest_request_while(http, sidecar, lambda: len(slack.delivered) == 1 and bool(sent))

    first, second = slack.posts
    assert (first.answer, second.answer) == ("429:1", "ok")
    assert second.at - first.at >= 0.95, "Retry-After: 1 was honoured"
    assert second.body == first.body
    assert sent == [("breaker_open", "sent")]
    assert slowest < FAST_REQUEST, f"a request took {slowest:.3f}s while Slack rate-limited us"


async def test_a_failing_slack_is_tried_three_times_then_the_alert_is_dropped_and_later_ones_still_go(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery,
    caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    slack.answer = "500"
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    sent = record_alerts(sidecar)
    with caplog.at_level(logging.WARNING, logger="resilience_proxy.alerts"):
        await trip(http, sidecar)
        slowest = await slowest_request_while(http, sidecar, lambda: sent == [("breaker_open", "failed")])

    assert [post.answer for post in slack.posts] == ["500", "500", "500"]
    gaps = [b.at - a.at for a, b in zip(slack.posts, slack.posts[1:])]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19, f"backoff 0.1 s, doubling: {gaps}"
    assert "Slack alert dropped after 3 attempts (HTTP 500)" in caplog.text
    assert slowest < FAST_REQUEST, f"a request took {slowest:.3f}s while Slack failed"

    slack.answer = "ok"
    await recover(http, sidecar, fake)
    await poll(lambda: sent == [("breaker_open", "failed"), ("breaker_recovered", "sent")])
    assert [text[:13] for text in slack.texts()] == ["✅ sms recover"]


async def test_an_error_no_retry_can_fix_is_not_retried(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery,
    caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    slack.answer = "channel_not_found"
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    sent = record_alerts(sidecar)
    with caplog.at_level(logging.ERROR, logger="resilience_proxy.alerts"):
        await trip(http, sidecar)
        await poll(lambda: sent == [("breaker_open", "failed")])
    assert len(slack.posts) == 1
    assert "Slack refused an alert (HTTP 200 channel_not_found); dropped: 🔴 sms circuit open" in caplog.text


async def test_a_hanging_slack_costs_each_alert_its_call_timeouts_and_proxying_nothing(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery
) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    slack.answer = "hang"
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    sent = record_alerts(sidecar)
    await trip(http, sidecar)
    started = time.monotonic()
    slowest = await slowest_request_while(http, sidecar, lambda: sent == [("breaker_open", "failed")])
    assert time.monotonic() - started < 3 * 0.5 + 0.3 + 1.0, "3 calls of at most call_timeout, 2 backoffs"
    assert len(slack.posts) == 3
    assert slowest < FAST_REQUEST, f"a request took {slowest:.3f}s while Slack hung"


async def test_an_alert_leaves_within_a_second_while_the_start_up_token_check_hangs(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    monkeypatch.setattr(alerts, "DELIVERY", Delivery())  # the production call_timeout: 5 s
    slack.auth_answer = "hang"
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    opened: list[float] = []

    def on_event(event: object) -> None:
        if isinstance(event, BreakerTransition) and event.to_state == "open":
            opened.append(time.monotonic())

    sidecar.events.subscribe(on_event)
    await poll(lambda: [call.method for call in slack.calls] == ["auth.test"])  # in flight, no answer for 5 s
    await trip(http, sidecar)
    await poll(lambda: len(slack.posts) == 1, deadline=3.0)
    assert slack.posts[0].at - opened[0] < 1.0, "the alert did not wait for auth.test"
    assert slack.texts("sms circuit open")


async def test_shutdown_with_slack_hanging_gives_up_after_the_close_grace(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    monkeypatch.setattr(alerts, "DELIVERY", Delivery(call_timeout=30.0, close_grace=2.0))
    slack.answer = "hang"
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    sent = record_alerts(sidecar)
    await trip(http, sidecar)
    await poll(lambda: len(slack.posts) == 1)  # in flight, and Slack will not answer for 30 s
    started = time.monotonic()
    await sidecar.drain()
    await sidecar.close()
    took = time.monotonic() - started
    assert took < 2.0 + 1.0, f"shutdown took {took:.2f}s"
    assert sent == [("breaker_open", "dropped")]


async def test_a_full_queue_drops_the_new_alert_at_once_and_counts_it(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[AlertSent] = []
    settings = SlackSettings(token=SLACK_TOKEN, channel=SLACK_CHANNEL, base_url=slack.base_url, queue_size=1)
    reporter = SlackAlerts(settings, sent.append, delivery=Delivery(call_timeout=30.0, close_grace=0.2))
    slack.answer = "hang"
    await reporter.start()
    try:
        reporter.on_event(BackendChanged("redis", False, time.time()))
        await poll(lambda: len(slack.posts) == 1)  # taken by the sender, hanging
        started = time.perf_counter()
        for key in ("a/default", "b/default"):  # the first waits in the queue, the second finds it full
            reporter.on_event(BreakerTransition(key, "closed", "open", "3 consecutive failures", time.time(),
                                                time.time() + 30))
        assert time.perf_counter() - started < 0.01, "the listener never waits"
        assert [(e.kind, e.result) for e in sent] == [("breaker_open", "dropped")]
        assert "Slack alert dropped, 1 already wait for Slack: 🔴 b circuit open: 3 consecutive failures" \
            in caplog.text, "the log keeps what Slack would have shown"
    finally:
        await reporter.close()
    assert [(e.kind, e.result) for e in sent] == [("breaker_open", "dropped"), ("backend_down", "dropped"),
                                                  ("breaker_open", "dropped")]


async def test_a_flapping_breaker_is_told_once_then_summarised(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery
) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    sidecar = await start_sidecar(policies(url, open_for="100ms"), alerts=slack_config(slack, flap_interval="2s"))
    sent = record_alerts(sidecar)
    for _ in range(4):
        fake.failing = {"/sms"}
        await trip(http, sidecar)
        await recover(http, sidecar, fake)
    await poll(lambda: len(slack.delivered) == 3, deadline=4.0)
    opened, recovered, summary = slack.texts()
    assert opened.startswith("🔴 sms circuit open") and recovered.startswith("✅ sms recovered")
    assert re.match(r"🔁 sms opened 4 times in the last [23]s; now closed\. "
                    r"one alert per [23]s at most; this summarises the rest · ", summary), summary
    assert sent == [("breaker_open", "sent"), ("breaker_recovered", "sent"), ("flapping", "sent")]


async def test_an_upstream_error_rate_is_told_crossing_above_and_back_below(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery
) -> None:  # type: ignore[no-untyped-def]
    fake, url = upstream
    fake.failing = {"/other"}
    sidecar = await start_sidecar(policies(url), alerts=slack_config(
        slack, error_rate=0.5, error_window="1m", error_min_requests=4))
    for _ in range(4):
        assert await status(http, base_url(sidecar) + "/api/other") == 503
    await poll(lambda: len(slack.delivered) == 1)
    fake.failing.clear()
    for _ in range(6):
        assert await status(http, base_url(sidecar) + "/api/other") == 200
    await poll(lambda: len(slack.delivered) == 2)
    assert [text.split(" · ")[0] for text in slack.texts()] == [
        "📈 api error rate 100% over the last 1 min. 4 of 4 requests failed",
        "📉 api error rate back to 44%. 4 of 9 requests failed in the last 1 min",  # 4 of 8 is not below
    ]


async def test_the_state_backend_going_down_and_coming_back_is_told(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery,
    own_redis: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack),
                                  state={"backend": "redis", "redis_url": own_redis.url, "redis_timeout": "50ms"})
    sent = record_alerts(sidecar)
    assert await status(http, base_url(sidecar) + "/api/sms") == 503
    own_redis.kill()
    await poll(lambda: len(slack.delivered) == 1)
    own_redis.start()
    await poll(lambda: len(slack.delivered) == 2, deadline=8.0)
    down, up = slack.texts()
    assert down.startswith("🟠 State backend redis unreachable. breakers and rate limits now run per replica")
    assert re.match(r"🟢 State backend redis back after \ds\. breakers and rate limits are shared", up), up
    assert sent == [("backend_down", "sent"), ("backend_up", "sent")]


async def test_a_refused_config_reload_is_told_once_with_its_problems(
    start_sidecar: StartSidecar, slack: FakeSlack, upstream, quick_delivery
) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    sidecar = await start_sidecar(policies(url), alerts=slack_config(slack))
    policy = Path(sidecar.config.policy_files[0])
    good = policy.read_text()
    policy.write_text(good + "    timeout: 30\n")
    assert (await sidecar.reload("signal")).result == "error"
    assert (await sidecar.reload("signal")).result == "error"  # the same problems: not told again
    await poll(lambda: len(slack.delivered) == 1)
    line = good.count("\n") + 1
    assert slack.texts() == [
        f"⚠️ Config reload refused: 1 problem; the running config stays. {policy}:{line}:5: upstreams.api.timeout: "
        "invalid duration '30' (write 250ms, 30s, 15m or 1h) · reload after SIGHUP · "
        + slack.texts()[0].rsplit(" · ", 1)[1]]
    policy.write_text(good)
    assert (await sidecar.reload("signal")).result == "ok"
    await asyncio.sleep(0.3)
    assert len(slack.delivered) == 1  # a success says nothing


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("٣", 1.0), ("²", 1.0), ("1e3", 1.0), ("nan", 1.0),
                                                (None, 1.0), pytest.param("9" * 400, float("inf"), id="400-digits")])
def test_slacks_retry_after_is_read_strictly(value: str | None, seconds: float) -> None:
    """ASCII digits or an HTTP date, as the data plane reads upstreams; anything else is the 1 s default
    (an infinite wait is cut to ``max_retry_after`` by the sender)."""
    response = type("Answer", (), {"status_code": 429, "data": {"ok": False, "error": "ratelimited"},
                                   "headers": {} if value is None else {"Retry-After": value}})()
    assert alerts._refusal(response) == ("HTTP 429 ratelimited", seconds)
