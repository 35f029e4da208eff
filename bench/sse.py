"""What an open status page costs the data path: the sidecar under load with two SSE streams open vs none.

One sidecar (the ``breakers`` variant: a breaker per route, memory state) in front of nginx, pinned
alone on ``--proxy-cpu``; nginx, the load generators and the two stream readers (``curl -N`` on
``/admin/stream``, as two browser tabs would hold it) on ``--load-cpu``. Each round measures both
arms, in alternating order (A B, then B A, ...), so a burst of outside load hits both alike:

- **closed loop**: ``wrk -t1 -c32`` for ``--wrk-seconds``: the most the sidecar's core can do;
- **open loop at ``--rate`` (2,000 req/s)**: p50/p99 from the scheduled send time (bench/openloop.py),
  and the sidecar's CPU time per request answered (utime + stime from ``/proc``, requests from its
  ``/metrics``);
- **idle**: the sidecar's CPU over ``--idle-seconds`` with no request coming. The difference between
  the arms is what the two streams cost on their own (their stats built and sent every second), and
  set against the CPU the rate takes it is the streams' share of the core: a figure that a shared,
  noisy machine disturbs much less than a throughput (CPU time is counted per process).

The streams cost their stats (one document built and sent each second, however many streams) and
each transition; the per-request cost of feeding the page (the bus listener behind it) is there in
both arms, and is measured on its own: nanoseconds per request of ``StatusFeed.on_event`` for one
request's events, next to the sidecar's measured CPU per request.

    python bench/sse.py            # 4 rounds, about 2.5 minutes
    python bench/sse.py --quick    # 1 round, about 25 seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import loads
import procs
import run
from variants import VARIANTS, write_config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy.clock import SystemClock  # the sidecar's code, for the listener's and the document's own cost
from proxy.config.load import load_config
from proxy.events import AttemptEnded, LimitDecision, RequestEnded
from proxy.observe.metrics import proxy_metrics
from proxy.observe.status import StatusFeed
from proxy.runtime.sidecar import Sidecar

TICKS = os.sysconf("SC_CLK_TCK")
STREAMS = 2


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def open_streams(admin: str, cpu: int, tmp: Path, services: list[procs.Service]) -> list[procs.Service]:
    """Two readers of the stream, as two open pages; returns once both have their snapshot."""
    readers = []
    for i in range(STREAMS):
        out = tmp / f"stream-{len(services)}-{i}.txt"
        service = procs.start(f"stream-{i}", ["curl", "-sN", "-o", str(out), admin + "/admin/stream"], cpu, tmp)
        services.append(service)
        readers.append((service, out))
    deadline = time.monotonic() + 10
    while not all(out.exists() and b"event: snapshot" in out.read_bytes() for _, out in readers):
        if time.monotonic() > deadline:
            raise procs.ServiceError("the status streams did not start")
        time.sleep(0.05)
    return [service for service, _ in readers]


def answered(admin_port: int) -> float:
    """Requests the sidecar has answered so far (the sum of ``resilience_proxy_requests_total``)."""
    text = procs.http_text(admin_port, "/metrics", timeout=5.0)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("resilience_proxy_requests_total{"))


def measure_arm(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    """One arm of a round: wrk's throughput, the open loop's latency and CPU per request answered, then
    the sidecar's CPU while no request comes (what the streams cost on their own)."""
    closed = loads.wrk(url, args.wrk_seconds, 32, args.load_cpu)
    before, count = cpu_seconds(pid), answered(args.admin_port)
    opened = loads.openloop(url, args.rate, args.openloop_seconds, args.warmup, args.load_cpu, args.python)
    spent, sent = cpu_seconds(pid) - before, answered(args.admin_port) - count
    time.sleep(1.0)  # the last requests and the pools settle
    before = cpu_seconds(pid)
    time.sleep(args.idle_seconds)
    idle = cpu_seconds(pid) - before
    return {"rps": closed["rps"], "errors": closed["non_2xx"] + closed["socket_errors"],
            "p50_ms": opened["latency_ms"]["p50"], "p99_ms": opened["latency_ms"]["p99"],  # type: ignore[index]
            "openloop_errors": opened["errors"],
            "cpu_us_per_request": round(spent / sent * 1e6, 2),
            "idle_cpu_ms_per_s": round(idle / args.idle_seconds * 1e3, 3)}


def feed_cost() -> dict[str, float]:
    """Nanoseconds per request of the status page's bus listener, for one request's events (the answer,
    its attempt, one rate-limit decision), next to the metrics listener on the same events."""
    events = [AttemptEnded("bench", "default", 1, 200, None, 0.0008),
              LimitDecision("bench", "default", "per-org", "allowed"),
              RequestEnded("0f" * 16, "bench", "default", "GET", 200, 0.0011, 1)]
    feed, metrics = StatusFeed(SystemClock()), proxy_metrics()  # the process's one registration

    def per_request(listener: Any) -> float:
        def one() -> None:
            for event in events:
                listener(event)
        number = 20_000
        return min(timeit.repeat(one, number=number, repeat=5)) / number * 1e9

    return {"status_feed_ns": round(per_request(feed.on_event)), "metrics_ns": round(per_request(metrics.on_event))}


def document_cost(config: Path) -> dict[str, float]:
    """What one stats message costs the sidecar, measured in this process on the same config: building
    the document (a fresh read of the breakers, the traffic window) and encoding it, in CPU microseconds."""

    async def measure() -> dict[str, float]:
        sidecar = Sidecar(load_config(config), watch_interval=None)
        await sidecar.start()
        try:
            builds = 500
            started = time.process_time()
            for _ in range(builds):
                text = json.dumps(await sidecar.status.document(transitions=False), separators=(",", ":"))
            spent = time.process_time() - started
        finally:
            await sidecar.close()
        return {"build_and_encode_us": round(spent / builds * 1e6, 1), "bytes": len(text)}

    return asyncio.run(measure())


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per arm, and B against A (positive cost: the open streams made it worse)."""
    arms = {arm: {key: statistics.median(r[arm][key] for r in rounds) for key in rounds[0][arm]}
            for arm in ("none", "two_streams")}
    a, b = arms["none"], arms["two_streams"]
    streams_ms = b["idle_cpu_ms_per_s"] - a["idle_cpu_ms_per_s"]
    return {"medians": arms,
            "throughput_cost_pct": round((1 - b["rps"] / a["rps"]) * 100, 2),
            "cpu_per_request_cost_pct": round((b["cpu_us_per_request"] / a["cpu_us_per_request"] - 1) * 100, 2),
            "per_round_throughput_ratio": [round(r["two_streams"]["rps"] / r["none"]["rps"], 4) for r in rounds],
            "streams_cpu_ms_per_s": round(streams_ms, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, 3 s phases")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--wrk-seconds", type=float, default=5.0)
    parser.add_argument("--openloop-seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="CPU measured with no request coming")
    parser.add_argument("--upstream-port", type=int, default=18400)
    parser.add_argument("--sidecar-port", type=int, default=18480)
    parser.add_argument("--admin-port", type=int, default=19981)
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.wrk_seconds, args.openloop_seconds, args.warmup, args.idle_seconds = 1, 3.0, 3.0, 1.0, 3.0
    busy = [p for p in (args.upstream_port, args.sidecar_port, args.admin_port) if procs.port_in_use(p)]
    if busy:
        sys.exit(f"ports already in use on 127.0.0.1: {busy}")
    os.sched_setaffinity(0, {args.load_cpu})
    nginx = run.find_nginx()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-sse-"))
    tmp.chmod(0o755)
    services: list[procs.Service] = []
    started = time.time()
    try:
        conf = run.write_nginx_conf(tmp, args.upstream_port)
        services.append(procs.start("nginx", [nginx, "-c", str(conf), "-p", str(tmp), "-e", "stderr", "-g",
                                              "daemon off;"], args.load_cpu, tmp))
        procs.wait_ready(services[-1], args.upstream_port, "/")
        config = write_config(tmp / "sidecar", VARIANTS["breakers"], port=args.sidecar_port,
                              admin_port=args.admin_port, upstream_port=args.upstream_port, access_log=False)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        sidecar = procs.start("sidecar", [args.python, "-m", "proxy", "run", "--config", str(config)],
                              args.proxy_cpu, tmp, cwd=REPO, env=env)
        services.append(sidecar)
        url = f"http://127.0.0.1:{args.sidecar_port}/bench{run.PATH}"
        procs.wait_ready(sidecar, args.admin_port, "/healthz", deadline=20)
        procs.wait_ready(sidecar, args.sidecar_port, "/bench" + run.PATH)
        loads.wrk(url, 1, 32, args.load_cpu)  # warm-up
        admin = f"http://127.0.0.1:{args.admin_port}"
        rounds = []
        for number in range(args.rounds):
            result: dict[str, Any] = {}
            for arm in (("none", "two_streams") if number % 2 == 0 else ("two_streams", "none")):
                streams = open_streams(admin, args.load_cpu, tmp, services) if arm == "two_streams" else []
                result[arm] = measure_arm(url, sidecar.proc.pid, args)
                for stream in streams:
                    procs.stop(stream)
            rounds.append(result)
            print(f"round {number + 1}: {json.dumps(result)}", file=sys.stderr)
    finally:
        for service in reversed(services):
            procs.stop(service)
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
              "loadavg": Path("/proc/loadavg").read_text().split()[0],
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "python")},
              "rounds": rounds, **summarize(rounds), "listener": feed_cost(), "document": document_cost(config)}
    a, b = report["medians"]["none"], report["medians"]["two_streams"]
    print(f"\n{'':28}{'no stream':>12}{'2 streams':>12}")
    print(f"{'closed loop (req/s)':28}{a['rps']:>12.0f}{b['rps']:>12.0f}   cost {report['throughput_cost_pct']:+.2f}%")
    print(f"{'CPU per request (us)':28}{a['cpu_us_per_request']:>12.1f}{b['cpu_us_per_request']:>12.1f}"
          f"   cost {report['cpu_per_request_cost_pct']:+.2f}%")
    print(f"{f'p50 / p99 at {args.rate:.0f}/s (ms)':28}{a['p50_ms']:>6.2f}/{a['p99_ms']:<5.2f}"
          f"{b['p50_ms']:>6.2f}/{b['p99_ms']:<5.2f}")
    at_rate_ms = a["cpu_us_per_request"] * args.rate / 1000  # CPU ms per second that the rate takes
    report["streams_cost_pct_at_rate"] = round(report["streams_cpu_ms_per_s"] / at_rate_ms * 100, 3)
    print(f"{'idle CPU (ms per s)':28}{a['idle_cpu_ms_per_s']:>12.2f}{b['idle_cpu_ms_per_s']:>12.2f}"
          f"   the streams: {report['streams_cpu_ms_per_s']:.2f} ms/s = {report['streams_cost_pct_at_rate']:.2f}% "
          f"of the CPU {args.rate:.0f} req/s take")
    listener = report["listener"]
    print(f"status feed listener: {listener['status_feed_ns']} ns per request (metrics listener: "
          f"{listener['metrics_ns']} ns), {listener['status_feed_ns'] / 1000 / a['cpu_us_per_request'] * 100:.2f}% "
          "of the sidecar's CPU per request")
    document = report["document"]
    print(f"one stats message: {document['build_and_encode_us']} us to build and encode ({document['bytes']} bytes), "
          "once a second however many streams are open")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
