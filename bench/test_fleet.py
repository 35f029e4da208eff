"""Checks for bench/fleet.py's moving parts, in a few seconds and without starting sidecars: its config is
what the sidecar loads, its probes measure what they claim against loopback stand-ins (a replica that
takes a known time to see an opened breaker; a limit that holds and one that leaks), its arithmetic
and report, and the bench's own Redis Cluster on real redis-servers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import capacity
import cluster
import fleet
import fleet_probe
import fleet_report
import procs
import pytest
import redisstats
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.config.load import load_config
from proxy.config.policy_values import KeyKind, Rate, micros
from proxy.policy.ratelimit import spend
from tests.cluster_servers import cluster_port
from tests.redis_server import redis_server_binary


def test_each_sidecar_has_a_breaker_retries_three_limits_and_the_real_shared_limit(tmp_path: Path) -> None:
    args = fleet.parse_args([])
    topology = fleet.Topology("cluster", [16411, 16412, 16413], "redis+cluster://127.0.0.1:16411,127.0.0.1:16412")
    config = load_config(fleet.write_sidecar_config(1, args, tmp_path, topology), {})
    assert config.state.redis_url == topology.url and config.admin.token == fleet.TOKEN
    assert (str(config.listen), str(config.admin.listen)) == ("127.0.0.1:18420", "127.0.0.1:19420")
    bench, limited = sorted(config.upstreams, key=lambda u: u.name)
    assert (bench.name, limited.name) == ("bench", "limited")
    route = bench.default_route
    assert route is not None and route.breaker is not None and route.retry.attempts == 3
    assert len(route.rate_limits) == 3
    assert limited.default_route is not None
    [limit] = limited.default_route.rate_limits
    assert (limit.name, limit.kind, limit.rate) == ("shared", KeyKind.ORG, Rate(200, 1.0, 199))
    assert limited.default_route.breaker is None and limited.default_route.retry.attempts == 0
    assert fleet.BREAKER == f"{bench.name}/{route.name}"


def test_arguments_and_ports() -> None:
    quick = fleet.parse_args(["--quick", "--topology", "single"])
    assert (quick.sizes, quick.topologies, quick.repeats, quick.seconds) == ([1, 2], ["single"], 5, 2.0)
    full = fleet.parse_args([])
    assert full.sizes == [1, 2, 4] and full.topologies == ["single", "cluster"]
    ports = fleet.bench_ports(full)
    assert len(ports) == len(set(ports))
    for bad in (["--topology", "sentinel"], ["--sidecars", "4,2"], ["--sidecars", "two"], ["--seconds", "600"],
                ["--limit", "0"]):
        with pytest.raises(SystemExit):
            fleet.parse_args(bad)


class Replicas:
    """Stand-ins for sidecars: an admin port whose force-open and reset each replica's data port sees
    after its own delay, answering 503 while it sees the breaker open."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.open = [False] * len(delays)

    def admin(self) -> web.Application:
        async def mutate(request: web.Request) -> web.Response:
            assert request.headers["Authorization"] == f"Bearer {fleet.TOKEN}"
            opened = request.match_info["action"] == "force-open"
            loop = asyncio.get_running_loop()
            for i, delay in enumerate(self.delays):
                loop.call_later(delay, self.open.__setitem__, i, opened)
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/admin/breakers/bench/default/{action}", mutate)
        return app

    def data(self, i: int) -> web.Application:
        async def proxied(_: web.Request) -> web.Response:
            return web.Response(status=503 if self.open[i] else 200, body=b"{}")

        app = web.Application()
        app.router.add_get("/{tail:.*}", proxied)
        return app


async def test_propagation_times_each_replica_from_the_admin_call_to_its_answers() -> None:
    replicas = Replicas([0.05, 0.3])
    async with TestServer(replicas.admin()) as admin, TestServer(replicas.data(0)) as one, \
            TestServer(replicas.data(1)) as two:
        result = await fleet_probe.propagation(admin.port, fleet.BREAKER, fleet.TOKEN, [one.port, two.port],
                                               "/bench/x", repeats=3)
    assert result.missed == 0 and len(result.opened) == len(result.closed) == 6
    for samples in (result.opened, result.closed):
        # Each round appends the first replica's delay, then the second's; never seen before it happened,
        # and (a loose bound, for a loaded machine) not long after.
        fast, slow = samples[0::2], samples[1::2]
        assert all(50 <= ms < 50 + 1000 for ms in fast) and all(300 <= ms < 300 + 1000 for ms in slow), samples
        assert sorted(fast)[1] < sorted(slow)[1], samples


def gcra_app(rate: Rate, leak: bool = False) -> web.Application:
    """A limit as the sidecar keeps it (proxy/policy/ratelimit.py), or with ``leak`` one that admits all."""
    tat: list[int | None] = [None]

    async def limited(_: web.Request) -> web.Response:
        verdict, charged = spend(tat[0], micros(time.time()), rate)
        if verdict.allowed:
            tat[0] = charged
        return web.Response(status=200 if verdict.allowed or leak else 429, body=b"{}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", limited)
    return app


async def test_over_admission_is_zero_for_a_real_limit_and_caught_for_a_leaking_one() -> None:
    rate = Rate(20, 1.0, 19)
    for leak in (False, True):
        async with TestServer(gcra_app(rate, leak)) as one:
            admission = await fleet_probe.hammer([one.port], "/limited/x", [("X-Org-Id", "o")], 4, 0.6)
        bound = fleet_probe.allowed_at_most(rate.limit, rate.per, rate.burst, admission)
        assert admission.errors == 0 and sum(admission.statuses.values()) >= 2 * bound  # far above the limit
        if leak:
            assert admission.admitted - bound > 0
        else:
            assert 20 <= admission.admitted <= bound  # a fresh bucket's 20 at once, then 20/s
            assert set(admission.statuses) == {200, 429}


async def test_hammer_stops_at_its_cap() -> None:
    async with TestServer(gcra_app(Rate(10, 1.0, 9))) as one:
        admission = await fleet_probe.hammer([one.port, one.port], "/", [], 3, seconds=30, cap=40)
    assert sum(admission.statuses.values()) == 40


def test_redis_cost_per_request_over_every_node() -> None:
    per_node = {1: {"evalsha": 100, "get": 300, "set": 300, "hmget": 2}, 2: {"evalsha": 4, "hgetall": 4},
                3: {}}
    cost = fleet_report.cost(per_node, 100)
    assert cost["executed"] == 710 and cost["executed_per_request"] == 7.1
    assert cost["sent_per_request"] == 1.06 and cost["evalsha_per_request"] == 1.04
    assert cost["busiest_node_share"] == round(702 / 710, 3)
    assert fleet_report.cost({1: {}}, 0)["executed_per_request"] is None


def test_spread_and_benchmark_output() -> None:
    assert fleet_report.spread([float(i) for i in range(1, 101)]) == {"n": 100, "p50": 50.0, "p99": 99.0,
                                                                       "max": 100.0}
    assert fleet_report.spread([])["p50"] is None
    csv = ('"test","rps","avg_latency_ms"\n'
           '"EVALSHA abc 3 k1 k2 k3 1 2","41234.56","1.1"\n')
    assert fleet_report.benchmark_rps(csv) == 41234.56
    with pytest.raises(ValueError):
        fleet_report.benchmark_rps("ERR unknown command")


def _result(executed: float, evalsha: float, share: float) -> dict[str, Any]:
    cost = {"sent_per_request": evalsha + 0.2, "executed_per_request": executed, "evalsha_per_request": evalsha,
            "busiest_node_share": share, "backend_errors": 0}
    return {"throughput": {"rps": 1500.0, "redis": cost}, "paced": {"redis": cost},
            "propagation": {"opened": fleet_report.spread([2.0, 3.0]), "closed": fleet_report.spread([2.5]),
                            "missed": 0},
            "admission": {"admitted": 810, "allowed_at_most": 805, "over": 5, "offered_rps": 3000, "saturated": True,
                          "allowed_without_redis": 7},
            "loadavg": "0.50"}


def test_report_tables_and_model() -> None:
    report = {"date": "today", "loadavg_end": "0.7", "versions": {"loadavg": "0.5", "redis": "6.2.14", "cpus": "2"},
              "settings": {"topologies": ["single", "cluster"], "rate": 50.0, "limit": 200},
              "results": {"single": {"1": _result(7.0, 1.0, 1.0), "2": _result(7.2, 1.2, 1.0)},
                          "cluster": {"1": _result(9.0, 3.0, 0.5),
                                      "2": {"error": "a sidecar did not start: x exited\nValueError: no cluster"}},
                          "capacity": {"evalsha3_per_s_P1": 3000.0, "evalsha3_per_s_P16": 6000.0,
                                       "evalsha1_per_s_P1": 4000.0, "evalsha3_per_cpu_s_P1": 30000,
                                       "evalsha3_per_cpu_s_P16": 60000, "evalsha1_per_cpu_s_P1": 40000,
                                       "evalsha0_per_s_P1": 9000.0, "evalsha0_per_cpu_s_P1": 120000,
                                       "usec_per_evalsha": 20.0}}}
    text = fleet_report.markdown(report)
    assert "| single | 2 | 1,500 | 1.40 (7.20) | 1.20 | 1.40 (7.20) | 100% | 0, 0 | 0.50 |" in text
    assert "| cluster | 2 | error: a sidecar did not start: x exited ... ValueError: no cluster |" in text
    assert "| single | 2 | 2.0 / 3.0 | 2.5 / 2.5 | 810 / 805 (5; 7 allowed without Redis) | 3,000 |" in text
    model = fleet_report.model(report)
    single, cluster_ = model["single"], model["cluster"]
    assert single["from_sidecars"] == 2 and single["evalsha_per_s"] == pytest.approx(60_000)
    assert single["redis_needed"] == 4 and single["pods_on_one"] == 250  # 15,000/s at half busy, 60 per pod
    assert cluster_["evalsha_per_s"] == pytest.approx(150_000) and cluster_["redis_needed"] == 8
    assert cluster_["hot_slot_busy"] == pytest.approx(1.25) and cluster_["pods_per_shared_bucket"] == 400
    assert "60,000 EVALSHA/s" in text and "150,000 EVALSHA/s" in text and "(125% of it)" in text
    assert "3 keys 3,000/s at -P 1 (30,000 per second of Redis CPU)" in text
    assert "a 3-key call costs 4.0 PINGs, a 1-key call 3.0." in text
    assert fleet_report.model_lines({"results": {}}) == ["(no model: no paced rounds or no redis-benchmark figure)"]


def test_the_bench_cluster_serves_every_slot(tmp_path: Path) -> None:
    ranges = cluster.slot_ranges(3)
    assert ranges[0][0] == 0 and ranges[-1][1] == cluster.SLOTS - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
    services: list[procs.Service] = []
    ports = [cluster_port() for _ in range(3)]
    try:
        cluster.start(redis_server_binary(), ports, 0, tmp_path, services)
        assert {cluster.info_field(port, "cluster-info", "cluster_slots_ok") for port in ports} == {"16384"}
        assert redisstats.ping(ports[2])
    finally:
        for service in services:
            procs.stop(service)


def test_the_capacity_benchmark_runs_the_sidecars_script_and_every_call_passes(tmp_path: Path) -> None:
    port = cluster_port()
    result = capacity.evalsha_capacity(redis_server_binary(), port, 0, 0, 2000, tmp_path)
    assert "error" not in result, result
    assert min(result[f"evalsha{keys}_per_s_P{p}"] for keys, p in capacity.RUNS) > 0
    assert result["evalsha_failed"] == 0 and result["usec_per_evalsha"] > 0
    assert all(result[f"evalsha{keys}_per_cpu_s_P{p}"] > 0 for keys, p in capacity.RUNS)


def test_cpu_seconds_counts_this_process() -> None:
    before = capacity.cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert capacity.cpu_seconds(os.getpid()) - before >= 0.02
