"""Checks for the benchmark's own moving parts (run explicitly: pytest bench/).

A load generator that mis-frames responses or a reference proxy that mangles paths would make
every number in the report wrong without any visible error, so both are tested here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import openloop
import pytest
import redisstats
import refproxy
from aiohttp import web
from aiohttp.test_utils import TestServer
from openloop import ResponseParser
from report import added_latency, aggregate, markdown, table, verdict
from variants import VARIANTS, parse_variants, ports_of, write_config
from yarl import URL

from proxy.config.load import load_config
from proxy.policy.breaker import BreakerPolicy

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
        ("plain,nope", "unknown sidecar variant(s) nope: choose from plain, breakers, breakers-redis, retries"),
        ("plain,plain", "sidecar variant listed twice in 'plain,plain'"),
        (",", "no sidecar variant given"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_variants(bad)
    assert [ports_of(i, 18080, 19901) for i in range(3)] == [(18080, 19901), (18090, 19911), (18100, 19921)]


@pytest.mark.parametrize(
    ("variant", "breaker", "backend", "redis_url", "retries"),
    [
        ("plain", None, "memory", None, 0),
        ("breakers", BreakerPolicy(consecutive_failures=3, open_for=30.0), "memory", None, 0),
        ("breakers-redis", BreakerPolicy(consecutive_failures=3, open_for=30.0), "redis", "redis://127.0.0.1:16379/0",
         0),
        ("retries", None, "memory", None, 3),
    ],
)
def test_variant_config_loads_as_intended(
    tmp_path: Path, variant: str, breaker: BreakerPolicy | None, backend: str, redis_url: str | None, retries: int
) -> None:
    """Read back by the sidecar's own loader: the bench measures what it claims to."""
    conf = write_config(
        tmp_path, VARIANTS[variant], port=18090, admin_port=19911, upstream_port=18000, access_log=False,
        redis_port=16379,
    )
    config = load_config(conf, environ={})
    (upstream,) = config.upstreams
    assert (upstream.url, upstream.prefix, upstream.routes) == ("http://127.0.0.1:18000", "/bench", ())
    assert upstream.default_route.breaker == breaker
    assert upstream.default_route.retry.attempts == retries
    assert (str(config.listen), str(config.admin.listen)) == ("127.0.0.1:18090", "127.0.0.1:19911")
    assert config.state.backend == backend and config.log.access is False
    if redis_url:
        assert config.state.redis_url == redis_url


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

    settings = {"rounds": 3, "wrk_seconds": 5, "wrk_connections": 32, "openloop_seconds": 10, "warmup_seconds": 2}
    text = table(results, {**settings, "rates": [2000]})
    assert "77.1% of reference,  90.0% of sidecar" in text
    assert "p50 +0.250 over sidecar" in text
    assert "Target: sidecar+breakers throughput loss vs sidecar <= 10%: MET (+10.0% loss)" in text
    assert "Target: sidecar+breakers-redis added p50 vs sidecar at 2000/s < 0.2 ms: NOT MET (+0.250 ms)" in text
    assert (
        "sidecar+breakers-redis: 0.0033 Redis commands per proxied request "
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
