"""Checks for the benchmark's own moving parts (run explicitly: pytest bench/).

A load generator that mis-frames responses or a reference proxy that mangles paths would make
every number in the report wrong without any visible error, so both are tested here.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import openloop
import pytest
import refproxy
from aiohttp import web
from aiohttp.test_utils import TestServer
from openloop import ResponseParser
from report import added_latency, aggregate, markdown, table, verdict
from yarl import URL

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
