"""Checks for bench/sse.py's own arithmetic (the bench itself runs by hand: see bench/README.md)."""

from __future__ import annotations

import os

import sse


def test_cpu_seconds_reads_this_process() -> None:
    before = sse.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert sse.cpu_seconds(os.getpid()) > before


def test_costs_are_the_medians_of_b_against_a() -> None:
    arm = {"rps": 1000.0, "errors": 0, "p50_ms": 1.0, "p99_ms": 2.0, "openloop_errors": 0, "cpu_us_per_request": 100.0,
           "idle_cpu_ms_per_s": 1.0}
    streams = {**arm, "idle_cpu_ms_per_s": 1.5}
    rounds = [{"none": arm, "two_streams": {**streams, "rps": 980.0, "cpu_us_per_request": 101.0}},
              {"none": {**arm, "rps": 1010.0}, "two_streams": {**streams, "rps": 1000.0, "cpu_us_per_request": 102.0}},
              {"none": arm, "two_streams": {**streams, "rps": 990.0, "cpu_us_per_request": 101.5}}]
    summary = sse.summarize(rounds)
    assert summary["throughput_cost_pct"] == 1.0
    assert summary["cpu_per_request_cost_pct"] == 1.5
    assert summary["per_round_throughput_ratio"] == [0.98, 0.9901, 0.99]
    assert summary["streams_cpu_ms_per_s"] == 0.5


def test_the_listener_cost_is_measured() -> None:
    cost = sse.feed_cost()
    assert cost["status_feed_ns"] > 0 and cost["metrics_ns"] > 0
