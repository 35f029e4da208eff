"""Checks for bench/webhooks.py: its requests are what Twilio sends and what the sidecar accepts (signed
as twilio-python signs, each a distinct event), its config loads with the sidecar's loader, and its
closed loop counts every answer and stops at its bounds."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from urllib.parse import parse_qsl

import openloop
import pytest
import webhooks
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from proxy.config.load import load_config
from proxy.policy.webhook_auth import verify
from proxy.policy.webhook_keys import dedupe_key
from proxy.policy.webhook_request import InboundRequest


def split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert int(headers["content-length"]) == len(body)
    return request_line, headers, body


def test_the_signature_is_twilio_pythons() -> None:
    url = "http://127.0.0.1:18181/hooks/twilio/status"
    params = webhooks.status_callback(7)
    validator = RequestValidator(webhooks.AUTH_TOKEN)
    assert webhooks.signature(webhooks.AUTH_TOKEN, url, params) == validator.compute_signature(url, dict(params))
    _, headers, body = split(webhooks.signed_request(7, 18181))
    assert validator.validate(url, dict(parse_qsl(body.decode())), headers["x-twilio-signature"])


def test_the_sidecar_verifies_each_request_and_sees_distinct_events(tmp_path: Path) -> None:
    config = webhooks.write_config(tmp_path, data_port=18080, admin_port=19901, hooks_port=18181, app_port=18000,
                                   redis_port=16379)
    loaded = load_config(config, {})
    assert loaded.state.backend == "redis" and str(loaded.webhooks_listen) == "127.0.0.1:18181"
    [hook] = loaded.webhooks
    assert (hook.name, hook.path, hook.provider, hook.mode) == (webhooks.WEBHOOK, webhooks.PATH, "twilio", "queue")
    assert hook.deliver_to == "http://127.0.0.1:18000/app/status"
    keys = set()
    for i in range(20):
        request_line, headers, body = split(webhooks.signed_request(i, 18181))
        assert request_line == f"POST {webhooks.PATH} HTTP/1.1"
        inbound = InboundRequest("POST", "", headers, body)
        assert verify(hook, inbound).ok
        keys.add(dedupe_key(hook, inbound))
    assert len(keys) == 20


async def test_the_closed_loop_counts_every_answer_and_stops_at_its_cap() -> None:
    seen: list[str] = []

    async def app(request: web.Request) -> web.Response:
        seen.append(request.headers["I-Twilio-Idempotency-Token"])
        return web.Response(status=200 if len(seen) % 10 else 503, text="<Response/>", content_type="text/xml")

    server = web.Application()
    server.router.add_post(webhooks.PATH, app)
    async with TestServer(server, host="127.0.0.1") as running:
        requests = webhooks.signed_requests(running.port, itertools.count())
        result = await webhooks.closed_loop(running.port, requests, conns=4, seconds=30.0, cap=100)
    assert (result["accepted"], result["other"]) == (90, 10)
    assert sorted(seen) == sorted(f"bench-{i}" for i in range(100))


async def test_the_open_loop_sends_each_given_request_once() -> None:
    seen: list[str] = []

    async def app(request: web.Request) -> web.Response:
        seen.append(request.headers["I-Twilio-Idempotency-Token"])
        return web.Response(text="<Response/>", content_type="text/xml")

    server = web.Application()
    server.router.add_post(webhooks.PATH, app)
    async with TestServer(server, host="127.0.0.1") as running:
        answers = await openloop.run(f"http://127.0.0.1:{running.port}{webhooks.PATH}", 200, 0.5, 0.1, 4, 2.0,
                                     requests=webhooks.signed_requests(running.port, itertools.count(1000)))
    assert len(seen) == len(set(seen)) == 120
    assert answers["non_2xx"] == answers["timeouts"] == 0


def test_rounds_are_summarised_as_medians_and_commands_per_accepted_event() -> None:
    def one(proxied: float, accepted: float, accepted_n: int, evalsha: int) -> dict:
        return {"proxied": {"per_second": proxied}, "accept": {"per_second": accepted, "accepted": accepted_n,
                                                               "other": 0},
                "delivery": {"per_second": 500.0}, "backlog_at_stop": 100, "completed": accepted_n,
                "dead_letter": 0, "commands": {"evalsha": evalsha, "xack": accepted_n}}

    summary = webhooks.summarize([one(2000, 1000, 1000, 2500), one(1800, 990, 990, 2475), one(2100, 400, 400, 1000)])
    assert (summary["proxied_per_second"], summary["accepted_per_second"]) == (2000, 990)
    assert summary["accepted_vs_proxied"] == 0.495
    assert summary["redis"]["per_event"] == {"evalsha": 2.5, "xack": 1.0}
    assert summary["redis"]["total_per_event"] == 3.5
    table = webhooks.markdown({**summary, "latency": {"200": {
        "webhook": {"latency_ms": {"p50": 0.9, "p99": 2.1, "max": 5.0}, "errors": 0},
        "proxied": {"latency_ms": {"p50": 0.7, "p99": 1.5, "max": 3.0}, "errors": 0}}}}).splitlines()
    assert table[2] == ("| answered 2xx, closed loop, delivering meanwhile | 990 events/s (0 not 2xx; 0 of 2,390 "
                        "forwarded without Redis: passthrough) |")
    assert "| Redis round trips (EVALSHA) per event queued, accept to completed | 2.5 |" in table
    assert table[-1] == ("| provider answer at 200/s, open loop | p50 0.9 ms, p99 2.1 ms, max 5.0 ms; 0 failed "
                         "(proxied POST: p50 0.7, p99 1.5 ms) |")


def test_the_proxied_yardstick_carries_the_same_form_through_the_data_port(tmp_path: Path) -> None:
    request_line, _, body = split(webhooks.proxied_request(3, 18080))
    assert request_line == "POST /bench/app/status HTTP/1.1"
    assert dict(parse_qsl(body.decode())) == dict(webhooks.status_callback(3))
    config = load_config(webhooks.write_config(tmp_path, data_port=18080, admin_port=19901, hooks_port=18181,
                                               app_port=18000, redis_port=16379), {})
    [bench] = config.upstreams
    assert bench.prefix == "/bench" and bench.url == "http://127.0.0.1:18000"
    assert config.breakers() == []


def test_quick_mode_shortens_every_phase() -> None:
    args = webhooks.parse_args(["--quick"])
    assert (args.seconds, args.rounds, args.openloop_seconds, args.rates) == (3.0, 1, 3.0, [200.0])
    with pytest.raises(SystemExit):
        webhooks.parse_args(["--connections", "many"])


async def test_received_reads_the_listeners_answers_by_result_for_the_bench_webhook() -> None:
    text = ('resilience_proxy_webhooks_received_total{webhook="bench_status",result="accepted"} 120.0\n'
            'resilience_proxy_webhooks_received_total{webhook="bench_status",result="passthrough"} 7.0\n'
            'resilience_proxy_webhooks_received_total{webhook="other",result="accepted"} 5.0\n')

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=text)

    server = web.Application()
    server.router.add_get("/metrics", metrics)
    async with TestServer(server, host="127.0.0.1") as running:
        counts = await asyncio.to_thread(webhooks.received, running.port)
    assert counts == {"accepted": 120, "passthrough": 7}
