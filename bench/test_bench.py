"""Checks for the benchmark's own moving parts (run explicitly: pytest bench/).

A load generator that mis-frames responses or a reference proxy that mangles paths would make
every number in the report wrong without any visible error, so both are tested here.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import loads
import metrics_mode
import openloop
import procs
import pytest
import redisstats
import refproxy
import run
import workers
from aiohttp import web
from aiohttp.test_utils import TestServer
from openloop import ResponseParser
from report import added_latency, aggregate, markdown, table, verdict
from variants import VARIANTS, parse_variants, ports_of, write_config
from yarl import URL

from proxy.config.load import load_config
from proxy.config.policy_values import BreakerPolicy, KeyKind, MissingKey, Rate
from proxy.policy.limitkeys import RequestFacts, key_value

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"


def test_parser_content_length_split_anywhere() -> None:
    for cut in range(1, len(OK)):
        parser = ResponseParser()
        assert parser.feed(OK[:cut]) == []
        assert parser.feed(OK[cut:]) == [(200, False)]


def test_parser_two_responses_in_one_read() -> None:
    assert ResponseParser().feed(OK + OK.replace(b"200 OK", b"503 Busy")) == [(200, False), (503, False)]


def test_parser_chunked_with_and_without_trailers() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    trailer = chunked[:-2] + b"Checksum: 1\r\n\r\n"
    for raw in (chunked, trailer):
        parser = ResponseParser()
        results = [r for i in range(len(raw)) for r in parser.feed(raw[i : i + 1])]
        assert results == [(200, False)]


def test_parser_bodiless_close_and_interim() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    assert ResponseParser().feed(raw) == [(204, True)]


def test_parser_rejects_unframed_body() -> None:
    with pytest.raises(ValueError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/bench/a/b?c=1", "/a/b?c=1"),
        ("/bench", "/"),
        ("/bench?x", "/?x"),
        ("/benchmark", "/benchmark"),
        ("/a%2Fb", "/a%2Fb"),
    ],
)
def test_strip_prefix(raw: str, expected: str) -> None:
    assert refproxy.strip_prefix(raw) == expected


async def test_refproxy_forwards_raw_path_and_filters_headers() -> None:
    seen: list[tuple[str, str | None, bytes]] = []

    async def upstream_handler(request: web.Request) -> web.Response:
        seen.append((request.raw_path, request.headers.get("X-Test"), await request.read()))
        return web.json_response({"sid": "SM123"}, status=201, headers={"Connection": "keep-alive", "X-Up": "1"})

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", upstream_handler)
    async with (
        TestServer(upstream_app) as upstream,
        TestServer(refproxy.build_app(str(upstream.make_url("")))) as proxy,
        aiohttp.ClientSession() as client,
    ):
        # encoded=True: the client must not normalise %40 either, or the test proves nothing.
        target = URL(f"http://{proxy.host}:{proxy.port}/bench/cal/team%20cal%40x?alt=json", encoded=True)
        async with client.post(target, data=b"To=1", headers={"X-Test": "t"}) as resp:
            assert resp.status == 201
            assert resp.headers["X-Up"] == "1"
            assert await resp.json() == {"sid": "SM123"}
    assert seen == [("/cal/team%20cal%40x?alt=json", "t", b"To=1")]


async def test_openloop_against_inline_server() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200 if request.path == "/ok" else 500, body=b"{}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    async with TestServer(app) as server:
        good = await openloop.run(str(server.make_url("/ok")), rate=200, duration=0.5, warmup=0.2, conns=4, timeout=1.0)
        bad = await openloop.run(
            str(server.make_url("/fail")), rate=200, duration=0.5, warmup=0.2, conns=4, timeout=1.0
        )
    assert good["ok"] == 100 and good["errors"] == 0
    assert bad["ok"] == 0 and bad["non_2xx"] == 100


async def test_openloop_sends_extra_headers() -> None:
    seen: list[tuple[str | None, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.headers.get("X-Org-Id"), request.headers.get("X-Forwarded-For")))
        return web.Response(body=b"{}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    headers = tuple(f"{name}: {value}" for name, value in loads.HEADERS)
    async with TestServer(app) as server:
        result = await openloop.run(str(server.make_url("/x")), rate=100, duration=0.2, warmup=0.0, conns=2,
                                    timeout=1.0, headers=headers)
    assert result["ok"] == 20
    assert set(seen) == {("bench-org", "203.0.113.7")}


def test_both_generators_send_the_bench_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every target gets the same headers from wrk and openloop, so the limits' org and ip keys are real."""
    cmds: list[list[str]] = []

    def fake_run(cmd: list[str], **_: Any) -> Any:
        cmds.append(cmd)
        out = "1000 requests in 1.00s, 1KB read\nRequests/sec:   1000.00\n" if "wrk" in cmd else '{"ok": 1}\n'
        return type("Done", (), {"stdout": out, "returncode": 0, "stderr": ""})()

    monkeypatch.setattr(loads.subprocess, "run", fake_run)
    assert loads.wrk("http://127.0.0.1:1/x", 1, 32, 1)["requests"] == 1000
    loads.openloop("http://127.0.0.1:1/x", 2000, 1, 1, 1)
    wrk_cmd, openloop_cmd = cmds
    assert wrk_cmd[-5:] == ["-H", "X-Org-Id: bench-org", "-H", "X-Forwarded-For: 203.0.113.7", "http://127.0.0.1:1/x"]
    assert openloop_cmd[-4:] == ["--header", "X-Org-Id: bench-org", "--header", "X-Forwarded-For: 203.0.113.7"]


def _rounds(rps: float, p50: float, p99: float) -> dict[str, Any]:
    """Three rounds whose medians are (rps, p50, p99); the middle round is disturbed."""

    def ol(bump: float, lag: float) -> dict[str, Any]:
        ms = {"p50": p50 + bump, "p90": p50 + bump, "p99": p99 + bump, "p99.9": p99 + bump, "max": p99 + bump}
        return {"achieved_rate": 2000.0, "errors": 0, "latency_ms": ms, "send_lag_ms": {"p50": 0.06, "p99": lag}}

    wrk = [{"rps": rps + d, "non_2xx": 0, "socket_errors": 0} for d in (0.0, -500.0, 100.0)]
    return {"wrk": wrk, "openloop": {"2000": [ol(0.0, 0.2), ol(5.0, 2.0), ol(-0.01, 0.2)]}}


def test_report_medians_verdict_and_table() -> None:
    raw = {
        "direct": _rounds(200000, 0.1, 0.3),
        "reference": _rounds(7000, 0.4, 0.9),
        "sidecar": _rounds(4900, 0.6, 1.4),
    }
    results = aggregate(raw)
    assert results["sidecar"]["wrk"]["rps"] == 4900
    assert results["sidecar"]["openloop"]["2000"]["noisy_runs"] == 1
    assert added_latency(results, "sidecar", "2000") == {"p50": 0.5, "p99": 1.1, "p99.9": 1.1}
    v = verdict(results)
    assert v["throughput_ratio"] == 0.7 and v["throughput_met"] is True and v["latency_met"] is False
    settings = {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10, "warmup_seconds": 2}
    text = table(results, {**settings, "rates": [2000]})
    assert "MET (70.0%)" in text and "NOT MET" in text and "[noisy 1/3]" in text
    assert "| sidecar | 0.600 | 0.600 | 1.400 | 1.400 | 1.400 | +0.500 | +1.100 | +1.100 | 0 |" in markdown(
        results, {**settings, "rates": [2000]}
    )


def test_parse_variants() -> None:
    assert [v.target for v in parse_variants("plain, breakers,breakers-redis")] == [
        "sidecar",
        "sidecar+breakers",
        "sidecar+breakers-redis",
    ]
    for bad, message in (
        ("plain,nope",
         "unknown sidecar variant(s) nope: choose from plain, breakers, breakers-redis, retries, limits-redis, "
         "policies, policies-redis, shipped"),
        ("plain,plain", "sidecar variant listed twice in 'plain,plain'"),
        (",", "no sidecar variant given"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_variants(bad)
    assert [ports_of(i, 18080, 19901) for i in range(3)] == [(18080, 19901), (18090, 19911), (18100, 19921)]


@pytest.mark.parametrize(
    ("variant", "breaker", "backend", "redis_url", "retries", "limits", "access_log"),
    [
        ("plain", None, "memory", None, 0, 0, False),
        ("breakers", BreakerPolicy(consecutive_failures=3, open_for=30.0), "memory", None, 0, 0, False),
        ("breakers-redis", BreakerPolicy(consecutive_failures=3, open_for=30.0), "redis", "redis://127.0.0.1:16379/0",
         0, 0, False),
        ("retries", None, "memory", None, 3, 0, False),
        ("limits-redis", None, "redis", "redis://127.0.0.1:16379/0", 0, 3, False),
        ("policies", BreakerPolicy(consecutive_failures=3, open_for=30.0), "memory", None, 3, 3, True),
        ("policies-redis", BreakerPolicy(consecutive_failures=3, open_for=30.0), "redis", "redis://127.0.0.1:16379/0",
         3, 3, True),
    ],
)
def test_variant_config_loads_as_intended(
    tmp_path: Path,
    variant: str,
    breaker: BreakerPolicy | None,
    backend: str,
    redis_url: str | None,
    retries: int,
    limits: int,
    access_log: bool,
) -> None:
    """Read back by the sidecar's own loader: the bench measures what it claims to (``--access-log`` off:
    the policy variants keep their access log on whatever the flag says)."""
    conf = write_config(
        tmp_path, VARIANTS[variant], port=18090, admin_port=19911, upstream_port=18000, access_log=False,
        redis_port=16379,
    )
    config = load_config(conf, environ={})
    (upstream,) = config.upstreams
    assert (upstream.url, upstream.prefix, upstream.routes) == ("http://127.0.0.1:18000", "/bench", ())
    assert upstream.default_route.breaker == breaker
    assert upstream.default_route.retry.attempts == retries
    assert len(upstream.default_route.rate_limits) == limits
    assert (str(config.listen), str(config.admin.listen)) == ("127.0.0.1:18090", "127.0.0.1:19911")
    assert config.state.backend == backend and config.log.access is access_log
    if redis_url:
        assert config.state.redis_url == redis_url


def test_limits_variant_checks_three_real_keys_and_never_rejects(tmp_path: Path) -> None:
    """The three limits as the sidecar reads them, and the keys the bench's headers give them."""
    conf = write_config(
        tmp_path, VARIANTS["limits-redis"], port=18090, admin_port=19911, upstream_port=18000, access_log=False,
        redis_port=16379,
    )
    config = load_config(conf, environ={})
    (upstream,) = config.upstreams
    limits = upstream.default_route.rate_limits
    assert [(lim.name, lim.kind) for lim in limits] == [
        ("per-org", KeyKind.ORG),
        ("per-ip", KeyKind.IP),
        ("account", KeyKind.GLOBAL),
    ]
    for lim in limits:
        # 1e9 per second, burst 1e9 - 1: 1 us apart, ~1000 s of tolerance; no bench run comes near it.
        assert lim.rate == Rate(1_000_000_000, 1.0, 999_999_999)
        assert (lim.rate.interval, lim.shadow, lim.on_missing_key) == (1, False, MissingKey.ANONYMOUS)
    facts = RequestFacts(dict(loads.HEADERS), "127.0.0.1", {}, config.org_header, config.client_ip_header)
    assert [key_value(lim, facts) for lim in limits] == ["bench-org", "203.0.113.7", "global"]
    assert VARIANTS["limits-redis"].uses_redis


@pytest.mark.parametrize("variant", ["policies", "policies-redis"])
def test_policies_variant_keys_ip_ip_global_and_never_rejects(tmp_path: Path, variant: str) -> None:
    """Issue 16's production set: two limits on the client address (a second, a minute), one on the upstream."""
    conf = write_config(
        tmp_path, VARIANTS[variant], port=18090, admin_port=19911, upstream_port=18000, access_log=False,
        redis_port=16379,
    )
    config = load_config(conf, environ={})
    (upstream,) = config.upstreams
    limits = upstream.default_route.rate_limits
    assert [(lim.name, lim.kind, lim.rate.limit, lim.rate.per) for lim in limits] == [
        ("per-ip", KeyKind.IP, 1_000_000_000, 1.0),
        ("per-ip-minute", KeyKind.IP, 60_000_000_000, 60.0),
        ("account", KeyKind.GLOBAL, 1_000_000_000, 1.0),
    ]
    for lim in limits:
        # 1 us apart, about 1000 s of tolerance: no bench run comes near a rejection.
        assert (lim.rate.interval, lim.shadow, lim.on_missing_key) == (1, False, MissingKey.ANONYMOUS)
        assert lim.rate.tolerance >= 999_999_999
    facts = RequestFacts(dict(loads.HEADERS), "127.0.0.1", {}, config.org_header, config.client_ip_header)
    assert [key_value(lim, facts) for lim in limits] == ["203.0.113.7", "203.0.113.7", "global"]


def test_redis_variant_needs_a_port(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a redis port"):
        write_config(tmp_path, VARIANTS["breakers-redis"], port=1, admin_port=2, upstream_port=3, access_log=False)


def test_commandstats_delta_drops_the_snapshot_itself() -> None:
    before = redisstats.parse_commandstats(
        "# Commandstats\r\ncmdstat_info:calls=4,usec=90,usec_per_call=22.50,rejected_calls=0,failed_calls=0\r\n"
        "cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n"
    )
    after = redisstats.parse_commandstats(
        "cmdstat_info:calls=5,usec=99,usec_per_call=19.80,rejected_calls=0,failed_calls=0\r\n"
        "cmdstat_evalsha:calls=14,usec=140,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n"
        "cmdstat_client|setinfo:calls=2,usec=3,usec_per_call=1.50,rejected_calls=0,failed_calls=0\r\n"
    )
    assert before == {"info": 4, "evalsha": 10}
    assert redisstats.delta(before, after) == {"client|setinfo": 2, "evalsha": 4}


def _with_redis(rounds: dict[str, Any], commands: list[dict[str, int]], requests: int) -> dict[str, Any]:
    for w, c in zip(rounds["wrk"], commands):
        w.update(requests=requests, redis={"commands": c, "backend_up": 1.0})
    return rounds


def test_report_breaker_variants_against_plain_sidecar() -> None:
    raw = {
        "direct": _rounds(200000, 0.1, 0.3),
        "reference": _rounds(7000, 0.4, 0.9),
        "sidecar": _rounds(6000, 0.45, 1.0),
        "sidecar+breakers": _rounds(5400, 0.6, 1.1),  # exactly 10% loss: met; +0.15 ms p50: met
        "sidecar+breakers-redis": _with_redis(
            _rounds(5000, 0.7, 1.2), [{"evalsha": 30, "get": 5}, {"evalsha": 25}, {"evalsha": 30, "get": 10}], 10000
        ),
    }
    raw["sidecar+breakers-redis"]["wrk"][1]["redis"]["backend_up"] = 0.0  # fell back to local state once
    results = aggregate(raw)
    redis = results["sidecar+breakers-redis"]["redis"]
    assert redis == {
        "commands": {"evalsha": 85, "get": 15},
        "total": 100,
        "requests": 30000,
        "per_request": 0.003333,
        "evalsha": 85,
        "evalsha_per_request": 0.002833,
        "sidecar_requests": None,  # runs recorded without the sidecar's own count
        "evalsha_per_answered": None,
        "limit_decisions": {},
        "local_decisions": 0,
        "backend_down_runs": 1,
        "runs": 3,
    }
    v = verdict(results)
    assert v["throughput_met"] is True and v["latency_met"] is True  # the issue 2 verdict is unchanged
    assert v["breakers"]["sidecar+breakers"] == {
        "throughput_ratio": 0.9,
        "throughput_loss": 0.1,
        "throughput_met": True,
        "added_p50_ms": 0.15,
        "latency_met": True,
    }
    redis_v = v["breakers"]["sidecar+breakers-redis"]
    assert (redis_v["throughput_loss"], redis_v["throughput_met"]) == (0.167, False)
    assert (redis_v["added_p50_ms"], redis_v["latency_met"]) == (0.25, False)
    assert redis_v["redis_commands_per_request"] == 0.003333
    assert redis_v["redis_evalsha_per_request"] == 0.002833
    assert "evalsha_met" not in redis_v  # breakers have no EVALSHA target

    settings = {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10, "warmup_seconds": 2}
    text = table(results, {**settings, "rates": [2000]})
    assert "77.1% of reference,  90.0% of sidecar" in text
    assert "p50 +0.250 over sidecar" in text
    assert "Target: sidecar+breakers throughput loss vs sidecar <= 10%: MET (+10.0% loss)" in text
    assert "Target: sidecar+breakers-redis added p50 vs sidecar at 2000/s < 0.2 ms: NOT MET (+0.250 ms)" in text
    assert (
        "sidecar+breakers-redis: 0.0028 EVALSHA and 0.0033 Redis commands per proxied request "
        "(100 over 30,000 wrk requests: evalsha 85, get 15); BACKEND DOWN after 1/3 runs"
    ) in text
    md = markdown(results, {**settings, "rates": [2000]})
    assert "| target | wrk req/s (median) | min-max | vs reference | vs sidecar |" in md
    assert "| sidecar+breakers | 5,400 | 4,900-5,500 | 77.1% | 90.0% |" in md
    assert "| sidecar | 0.450 | 0.450 | 1.000 | 1.000 | 1.000 | +0.350 | +0.700 | +0.700 | 0 |  |" in md
    redis_row = "| sidecar+breakers-redis | 0.700 | 0.700 | 1.200 | 1.200 | 1.200 | +0.600 | +0.900 | +0.900 | 0 | +0.250 |"
    assert redis_row in md


def test_report_breaker_variant_without_plain_sidecar_is_not_measured() -> None:
    results = aggregate({"direct": _rounds(200000, 0.1, 0.3), "sidecar+breakers": _rounds(5400, 0.6, 1.1)})
    results["sidecar+breakers-redis"] = {"error": "sidecar+breakers-redis exited with code 1:\nImportError"}
    v = verdict(results)
    assert v["breakers"]["sidecar+breakers"]["throughput_met"] is None
    assert v["breakers"]["sidecar+breakers-redis"]["latency_met"] is None
    text = table(results, {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10,
                           "warmup_seconds": 2, "rates": [2000]})
    assert "sidecar+breakers-redis FAILED: sidecar+breakers-redis exited with code 1:" in text
    assert "Target: sidecar+breakers throughput loss vs sidecar <= 10%: not measured" in text


def test_report_limits_redis_one_evalsha_per_request() -> None:
    """Issue 5: one EVALSHA per request for all the limits, and < 0.5 ms added p50 over the plain sidecar."""
    settings = {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10, "warmup_seconds": 2,
                "rates": [2000]}
    # 3 limits: per request 1 EVALSHA, and 3 GET + 3 SET inside the script. wrk completed 10,000 requests a
    # run; the sidecar answered 32 more in two runs (in flight when wrk stopped).
    per_run = [{"evalsha": 10032, "get": 30096, "set": 30096}, {"evalsha": 10000, "get": 30000, "set": 30000},
               {"evalsha": 10032, "get": 30096, "set": 30096}]
    raw = {
        "direct": _rounds(200000, 0.1, 0.3),
        "reference": _rounds(7000, 0.4, 0.9),
        "sidecar": _rounds(6000, 0.45, 1.0),
        "sidecar+limits-redis": _with_redis(_rounds(5000, 0.9, 1.6), per_run, 10000),
    }
    for w, answered in zip(raw["sidecar+limits-redis"]["wrk"], (10032, 10000, 10032)):
        w["redis"]["sidecar_requests"] = answered
        w["redis"]["limit_decisions"] = {"allowed": 3 * answered}
    results = aggregate(raw)
    redis = results["sidecar+limits-redis"]["redis"]
    assert (redis["evalsha"], redis["requests"], redis["evalsha_per_request"]) == (30064, 30000, 1.002133)
    assert (redis["sidecar_requests"], redis["evalsha_per_answered"]) == (30064, 1.0)
    assert (redis["total"], redis["per_request"]) == (210448, 7.014933)
    assert (redis["limit_decisions"], redis["local_decisions"]) == ({"allowed": 90192}, 0)
    v = verdict(results)["breakers"]["sidecar+limits-redis"]
    assert v["throughput_met"] is None and v["throughput_loss"] == 0.167  # shown, but no throughput target
    assert (v["added_p50_ms"], v["latency_met"]) == (0.45, True)
    assert (v["redis_evalsha_per_request"], v["redis_evalsha_per_answered"], v["evalsha_met"]) == (1.002133, 1.0, True)

    text = table(results, settings)
    assert "Target: sidecar+limits-redis added p50 vs sidecar at 2000/s < 0.5 ms: MET (+0.450 ms)" in text
    assert "Target: sidecar+limits-redis EVALSHA per request = 1.00 (one Redis round trip for all its limits): " \
           "MET (1.0000)" in text
    assert "throughput loss vs sidecar" not in text
    line = ("sidecar+limits-redis: 1.0021 EVALSHA and 7.0149 Redis commands per proxied request "
            "(210,448 over 30,000 wrk requests: get 90,192, set 90,192, evalsha 30,064); "
            "1.0000 EVALSHA per request the sidecar answered (30,064: +64 that wrk stopped waiting for); "
            "limit decisions: allowed 90,192")
    assert f"  {line}" in text
    md = markdown(results, settings)
    assert "| sidecar+limits-redis | 5,000 | 4,500-5,100 | 71.4% | 83.3% |" in md
    assert md.endswith(line)

    # Redis timed out mid-run and was back by its end (gauge 1): half the requests were decided locally.
    flaky = {**raw["sidecar+limits-redis"], "wrk": [dict(w) for w in raw["sidecar+limits-redis"]["wrk"]]}
    flaky["wrk"][0]["redis"] = {"commands": {"evalsha": 5016, "hello": 16}, "backend_up": 1.0,
                                "sidecar_requests": 10032, "limit_decisions": {"allowed": 15048,
                                                                                "allowed_backend_down": 15048}}
    shaky = aggregate({**raw, "sidecar+limits-redis": flaky})
    assert shaky["sidecar+limits-redis"]["redis"]["backend_down_runs"] == 0
    assert verdict(shaky)["breakers"]["sidecar+limits-redis"]["evalsha_met"] is False
    assert ("limit decisions: allowed 75,144, allowed_backend_down 15,048; "
            "REDIS DOWN DURING A RUN: 15,048 limit decisions made locally") in table(shaky, settings)

    # A file without the sidecar's count: judged per completed request, which the in-flight ones push up.
    for w in raw["sidecar+limits-redis"]["wrk"]:
        del w["redis"]["sidecar_requests"]
    v = verdict(aggregate(raw))["breakers"]["sidecar+limits-redis"]
    assert (v["redis_evalsha_per_answered"], v["evalsha_met"]) == (None, True)
    # One script call per limit (3 round trips), or a local answer without Redis: both fail the target.
    for evalsha in (30000, 9000):  # per run of 10,000 requests
        for w in raw["sidecar+limits-redis"]["wrk"]:
            w["redis"].update(commands={"evalsha": evalsha}, sidecar_requests=10000)
        v = verdict(aggregate(raw))["breakers"]["sidecar+limits-redis"]
        assert v["evalsha_met"] is False
    # Over 0.5 ms added p50: not met. Without a Redis count (e.g. the variant failed): not measured.
    slow = aggregate({**raw, "sidecar+limits-redis": _rounds(5000, 0.96, 1.6)})
    v = verdict(slow)["breakers"]["sidecar+limits-redis"]
    assert (v["latency_met"], v["evalsha_met"]) == (False, None)
    assert "EVALSHA per request = 1.00 (one Redis round trip for all its limits): not measured" in table(slow, settings)


def test_report_policies_against_reference() -> None:
    """Issue 16: the production policy set as a share of the reference proxy, same run (0.85x memory,
    0.75x Redis), shown beside the plain sidecar without a target against it."""
    raw = {
        "reference": _rounds(7000, 0.4, 0.9),
        "sidecar": _rounds(6300, 0.45, 1.0),
        "sidecar+policies": _rounds(5950, 0.5, 1.1),  # exactly 85%: met
        "sidecar+policies-redis": _rounds(5200, 0.6, 1.2),  # 74.3%: not met
    }
    results = aggregate(raw)
    v = verdict(results)["breakers"]
    assert (v["sidecar+policies"]["reference_ratio"], v["sidecar+policies"]["reference_met"]) == (0.85, True)
    assert (v["sidecar+policies-redis"]["reference_ratio"], v["sidecar+policies-redis"]["reference_met"]) == (
        0.743, False)
    assert v["sidecar+policies"]["latency_met"] is None and v["sidecar+policies"]["throughput_met"] is None
    text = table(results, {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10,
                           "warmup_seconds": 2, "rates": [2000]})
    assert "Target: sidecar+policies >= 85% of reference throughput: MET (85.0%)" in text
    assert "Target: sidecar+policies-redis >= 75% of reference throughput: NOT MET (74.3%)" in text
    assert "sidecar+policies added p50" not in text
    assert "85.0% of reference,  94.4% of sidecar" in text
    del raw["reference"]
    assert verdict(aggregate(raw))["breakers"]["sidecar+policies"]["reference_met"] is None


def test_parse_sidecar_metrics() -> None:
    """What the runner reads from a Redis variant's /metrics around each wrk run."""
    text = (
        "# HELP resilience_proxy_requests_total Requests answered\n"
        'resilience_proxy_requests_total{method="GET",status_class="2xx",upstream="bench"} 1234.0\n'
        'resilience_proxy_requests_created{method="GET",status_class="2xx",upstream="bench"} 1.7e+09\n'
        'resilience_proxy_requests_total{method="GET",status_class="5xx",upstream="bench"} 6.0\n'
        'resilience_proxy_rate_limit_decisions_total{limit="per-org",outcome="allowed",route="-",upstream="bench"} 1240.0\n'
        'resilience_proxy_rate_limit_decisions_total{limit="per-ip",outcome="allowed",route="-",upstream="bench"} 1240.0\n'
        'resilience_proxy_rate_limit_decisions_total{limit="per-ip",outcome="rejected",route="-",upstream="bench"} 2.0\n'
        "resilience_proxy_state_backend_up 1.0\n"
    )
    assert run.parse_metrics(text) == {
        "backend_up": 1.0,
        "requests": 1240,
        "limit_decisions": {"allowed": 2480, "rejected": 2},
    }
    assert run.parse_metrics("") == {"backend_up": None, "requests": 0, "limit_decisions": {}}


def test_shipped_variant_runs_as_the_image_did(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Access log on whatever --access-log says, PROMETHEUS_MULTIPROC_DIR set to an existing directory; the
    other variants never inherit the runner's own PROMETHEUS_MULTIPROC_DIR."""
    shipped, plain = VARIANTS["shipped"], VARIANTS["plain"]
    assert (shipped.target, shipped.access_log, shipped.multiproc_env) == ("sidecar+shipped", True, True)
    conf = write_config(tmp_path / "s", shipped, port=18090, admin_port=19911, upstream_port=18000,
                        access_log=True, redis_port=None)
    config = load_config(conf, environ={})
    assert config.log.access is True and config.upstreams[0].default_route.breaker is None
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/elsewhere")
    env = run.sidecar_env(shipped, Path("/code"), tmp_path / "s")
    assert env["PYTHONPATH"] == "/code" and Path(env["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
    assert "PROMETHEUS_MULTIPROC_DIR" not in run.sidecar_env(plain, Path("/code"), tmp_path / "p")


def test_baseline_runs_every_variant_again_from_the_other_code(tmp_path: Path) -> None:
    class Args:
        variants = parse_variants("plain,shipped")
        baseline = tmp_path
        upstream_port, reference_port, sidecar_port, admin_port, redis_port = 18000, 18081, 18080, 19901, 16379

    runs = run.sidecar_runs(Args())  # type: ignore[arg-type]
    assert [(v.target + suffix, code) for v, code, suffix in runs] == [
        ("sidecar", run.REPO_DIR), ("sidecar+shipped", run.REPO_DIR),
        ("sidecar@baseline", tmp_path), ("sidecar+shipped@baseline", tmp_path)]
    ports = run.bench_ports(Args())  # type: ignore[arg-type]
    assert len(set(ports)) == len(ports) == 2 + 2 * 4


def test_report_shipped_and_baseline_against_the_plain_sidecar_of_the_same_code() -> None:
    results = aggregate({
        "direct": _rounds(200000, 0.1, 0.3),
        "reference": _rounds(7000, 0.4, 0.9),
        "sidecar": _rounds(6000, 0.45, 1.0),
        "sidecar+shipped": _rounds(4800, 0.55, 1.1),
        "sidecar@baseline": _rounds(6000, 0.45, 1.0),
        "sidecar+shipped@baseline": _rounds(4000, 0.65, 1.2),
    })
    settings = {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10, "warmup_seconds": 2,
                "rates": [2000]}
    text = table(results, settings)
    assert "68.6% of reference,  80.0% of sidecar\n" in text
    assert "57.1% of reference,  66.7% of sidecar@baseline" in text
    assert "p50 +0.200 over sidecar@baseline" in text
    assert "sidecar+shipped: 120.0% of the baseline's req/s (4,000 -> 4,800), p50 at 2000/s -0.100 ms" in text
    assert "sidecar: 100.0% of the baseline's req/s (6,000 -> 6,000), p50 at 2000/s +0.000 ms" in text
    md = markdown(results, settings)
    assert "| sidecar+shipped@baseline | 4,000 | 3,500-4,100 | 57.1% | 66.7% |" in md
    assert "sidecar+shipped: 120.0% of the baseline's req/s" in md


def test_metrics_mode_times_both_modes(tmp_path: Path) -> None:
    """The file-backed run really writes files (it measures multiprocess mode), the other none."""
    assert all(ns > 0 for ns in metrics_mode.one(1000, None, 0))
    assert all(ns > 0 for ns in metrics_mode.one(1000, str(tmp_path), 0))
    assert sorted(p.name.split("_")[0] for p in tmp_path.glob("*.db")) == ["counter", "histogram"]


def test_report_issue16_per_request_targets_from_per_round_comparisons() -> None:
    """Issue 16: the plain sidecar against the reference proxy of the same rounds (median of the per-round
    ratios and differences, so a round the machine slowed down for both cancels out), CPU per request too."""

    def target(rps: list[float], cpu: list[float], p50: list[float], p99: list[float]) -> dict[str, Any]:
        wrk = [{"rps": r, "non_2xx": 0, "socket_errors": 0, "cpu_us": c} for r, c in zip(rps, cpu, strict=True)]
        ol = [{"achieved_rate": 500.0, "errors": 0, "send_lag_ms": {"p50": 0.06, "p99": 0.2},
               "latency_ms": {"p50": a, "p90": a, "p99": b, "p99.9": b, "max": b}} for a, b in zip(p50, p99, strict=True)]
        return {"wrk": wrk, "openloop": {"500": ol}}

    raw = {
        # The second round is slow for every target alike.
        "reference": target([7000, 3500, 7100], [130, 260, 128], [0.40, 0.80, 0.41], [0.90, 1.80, 0.92]),
        "sidecar": target([6400, 3200, 6300], [142, 285, 145], [0.45, 0.86, 0.49], [1.00, 2.00, 1.30]),
        "sidecar@baseline": target([4600, 2300, 4700], [197, 390, 193], [0.55, 1.00, 0.60], [1.20, 2.30, 1.30]),
    }
    results = aggregate(raw)
    assert results["sidecar"]["wrk"]["cpu_us"] == 145
    after, before = verdict(results)["per_request"]["sidecar"], verdict(results)["per_request"]["sidecar@baseline"]
    assert (after["throughput_ratio"], after["throughput_met"]) == (0.914, True)
    assert after["cpu_ratio"] == 1.096
    assert (after["added_ms_at_500"], after["latency_met"]) == ({"p50": 0.06, "p99": 0.2}, True)
    assert (before["throughput_ratio"], before["throughput_met"], before["latency_met"]) == (0.657, False, False)
    settings = {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10, "warmup_seconds": 2,
                "rates": [500], "access_log": True}
    text = table(results, settings)
    assert ("Target (issue 16, access log on): sidecar >= 0.90x reference req/s: MET (0.914, CPU per request "
            "1.10x the reference's)") in text
    assert "Target (issue 16): sidecar added over reference at 500/s <= 0.1 ms p50 / 0.3 ms p99: MET " \
           "(+0.060 / +0.200 ms)" in text
    assert "CPU 145.0 us/request" in text
    assert "| sidecar | 6,300 | 3,200-6,400 | 90.0% | 145.0 | 1.10x |" in markdown(results, settings)


def test_group_cpu_seconds_counts_a_busy_child_and_its_own_children(tmp_path: Path) -> None:
    """The CPU column (run.py, workers.py) reads every process of the target's group, so --workers counts."""
    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    script = ("import subprocess, sys, time\n"
              f"subprocess.run([sys.executable, '-c', {busy!r}])\n"
              f"exec({busy!r})\ntime.sleep(30)\n")
    child = procs.start("busy", [sys.executable, "-c", script], 0, tmp_path)
    try:
        deadline = time.monotonic() + 20
        while procs.group_cpu_seconds(child.proc.pid) < 0.55:
            assert time.monotonic() < deadline, "the group's CPU time never reached both busy loops"
            time.sleep(0.05)
    finally:
        procs.stop(child)


def test_workers_summary_ratio_load_share_and_spread() -> None:
    def run(rps: float, per_worker: list[int], nginx: float, wrk: float) -> dict[str, Any]:
        return {"rps": rps, "cpu_us_per_request": 150.0, "sidecar_cpu_s": 5.0, "nginx_cpu_s": nginx,
                "wrk_cpu_s": wrk, "wall_s": 5.0, "requests_per_worker": per_worker}

    summary = workers.summary({"1 worker": [run(6000, [30000], 0.4, 0.6), run(5000, [25000], 0.4, 0.6)],
                               "2 workers": [run(10800, [28000, 26000], 0.8, 1.2), run(9500, [24000, 23500], 1, 1)]})
    assert summary["ratio_2_to_1"] == {"median": 1.85, "rounds": [1.8, 1.9]}
    assert summary["load_side_share_of_2_cores"] == 0.2
    assert summary["spread_over_workers"] == [[28000, 26000], [24000, 23500]]


def test_hotspots_report_lists_the_policy_path_per_request(tmp_path: Path) -> None:
    """The table bench/hotspots.py prints, from a real cProfile file: per-request calls of the policy path."""
    import cProfile

    import hotspots

    from proxy.policy.ratelimit import most_restrictive

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(10):
        most_restrictive([], [])
    profiler.disable()
    profiler.dump_stats(tmp_path / "run.prof")
    text = hotspots.report(tmp_path / "run.prof", requests=10, top=5)
    assert text.startswith("10 requests;")
    assert re.search(r"^\s+1\.00\s+\S+\s+\S+\s+proxy/policy/ratelimit\.py:\d+\(most_restrictive\)$", text, re.MULTILINE)
    assert "-- policy path own time:" in text and "function calls per request" in text


def test_policy_path_counts_calls_per_request_of_both_variants() -> None:
    """bench/policy_path.py end to end (its worker in a subprocess, this tree's code), bounded and small."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(Path(__file__).parent / "policy_path.py"), "--calls", "--requests", "300"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    plain = float(re.search(r"^  plain\s+([\d.]+)$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    policies = float(re.search(r"^  policies\s+([\d.]+)$", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert 0 < plain < policies, out
