"""The policy path alone: CPU per request of the limiter and the guard, in-process, no HTTP.

Loads a bench variant's config with the sidecar's own loader and runs what the data plane runs per
request around the upstream call: ``Limiter.admit`` (with the request's facts) and ``Guard.run``
with an attempt that answers 200 at once, both emitting to an ``EventBus`` with the sidecar's own
listeners (logs, metrics, process info). ``plain`` runs the same with no policy, so
``variant - plain`` is what the policies cost a request, without the sockets, parsers and timers
that make a loaded sidecar's figures noisy. Figures are the process's CPU time per request. Memory
variants run one request at a time; a Redis variant (its own redis-server on --load-cpu) runs
``--concurrency`` at once, as under load (redis-py and hiredis included), and counts the Redis
commands per request.

    python bench/policy_path.py                        # policies vs plain, this tree
    python bench/policy_path.py --code /tmp/base-policy --variant policies-redis

The figure is the fastest of --rounds (as timeit reports): the work is the same every round, and on
a shared machine the slower rounds measure the neighbours. Compare two trees run one after the other;
each run is bounded by --requests per round.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
HEADERS = {"X-Org-Id": "bench-org", "X-Forwarded-For": "203.0.113.7", "Host": "127.0.0.1", "Accept": "*/*"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="policies", help="a bench variant (bench/variants.py)")
    p.add_argument("--code", type=Path, default=BENCH_DIR.parent, help="the tree whose proxy/ runs")
    p.add_argument("--requests", type=int, default=20_000, help="per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--concurrency", type=int, default=32, help="requests at once (Redis variants)")
    p.add_argument("--cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--redis-port", type=int, default=16397)
    p.add_argument("--redis-server", default="/usr/bin/redis-server")
    p.add_argument("--calls", action="store_true",
                   help="count Python function calls per request instead (cProfile; deterministic, noise-free)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not (1 <= args.rounds <= 50 and 100 <= args.requests <= 1_000_000 and 1 <= args.concurrency <= 256):
        p.error("rounds 1-50, requests 100-1,000,000, concurrency 1-256")
    return args


async def measure(variant_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Worker side (PYTHONPATH is the tree under test): µs per request for each round."""
    from variants import VARIANTS, write_config

    from proxy.config.load import load_config
    from proxy.events import EventBus
    from proxy.guard import Guard, Reply
    from proxy.limiter import Limiter
    from proxy.observe.logs import on_event as log_events
    from proxy.observe.metrics import proxy_metrics
    from proxy.observe.process_info import process_info
    from proxy.policy.limitkeys import RequestFacts
    from proxy.state.stores import open_stores

    variant = VARIANTS[variant_name]
    with tempfile.TemporaryDirectory() as tmp:
        conf = write_config(Path(tmp), variant, port=1, admin_port=2, upstream_port=3, access_log=False,
                            redis_port=args.redis_port if variant.uses_redis else None)
        config = load_config(conf, environ={})
    events = EventBus()
    for listener in (log_events, proxy_metrics().on_event, process_info().on_event):
        events.subscribe(listener)
    # A generous Redis timeout: a profiled or starved run must not fall back to the local decisions.
    stores = open_stores(dataclasses.replace(config.state, redis_timeout=1.0))
    stores.breakers.emit_to(events.emit)
    await stores.breakers.start()
    await stores.limits.start()
    guard = Guard(stores.breakers, emit=events.emit)
    limiter = Limiter(stores.limits, emit=events.emit)
    (upstream,) = config.upstreams
    route = upstream.default_route

    async def attempt(call: object, timeout: float) -> Reply:
        return Reply(status=200, seconds=0.0005)

    async def one() -> None:
        added = {"X-Request-Id": "r"}
        checks: Any = ()
        if route.rate_limits:
            facts = RequestFacts(HEADERS, "127.0.0.1", {}, config.org_header, config.client_ip_header)
            checks, fields = await limiter.admit(upstream, route, facts)
            added.update(fields)
        final = await guard.run(upstream, route, "GET", True, False, attempt, checks)
        added["X-Resilience-Attempts"] = str(final.number)

    async def batch(n: int) -> None:
        for _ in range(n):
            await one()

    per_task = max(1, args.requests // (args.concurrency if variant.uses_redis else 1))
    tasks = args.concurrency if variant.uses_redis else 1
    rounds = []
    await asyncio.gather(*(batch(100) for _ in range(tasks)))  # warm-up
    if args.calls:
        profiler = cProfile.Profile()
        profiler.enable()
        await asyncio.gather(*(batch(per_task) for _ in range(tasks)))
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        by_function = {f"{path.split('/proxy/')[-1] if '/proxy/' in path else path.split('/')[-1]}:{name}": nc
                       for (path, _, name), (_, nc, _, _, _) in stats.items()}
        total = per_task * tasks
        top = sorted(by_function.items(), key=lambda kv: -kv[1])[:int(os.environ.get("TOP", "15"))]
        await close(stores)
        return {"variant": variant_name, "calls_per_request": sum(by_function.values()) / total,
                "top": [(name, n / total) for name, n in top], "requests": total}
    for _ in range(args.rounds):
        cpu = time.process_time()
        await asyncio.gather(*(batch(per_task) for _ in range(tasks)))
        rounds.append((time.process_time() - cpu) / (per_task * tasks) * 1e6)
    await close(stores)
    return {"variant": variant_name, "us_per_request": rounds, "requests": per_task * tasks}


async def close(stores: Any) -> None:
    """Close both stores, within a bound: a bench must end even if a store's close hangs."""
    async with asyncio.timeout(30):
        await stores.limits.close()
        await stores.breakers.close()


def worker(args: argparse.Namespace) -> None:
    import uvloop

    sys.path.insert(0, str(BENCH_DIR))
    print(json.dumps(uvloop.run(measure(args.variant, args))))


def run_one(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    cmd = ["taskset", "-c", str(args.cpu), sys.executable, str(Path(__file__).resolve()), "--worker",
           "--variant", variant, "--requests", str(args.requests), "--rounds", str(args.rounds),
           "--concurrency", str(args.concurrency), "--redis-port", str(args.redis_port)] + (["--calls"] if args.calls else [])
    env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def redis_commands(port: int) -> int:
    sys.path.insert(0, str(BENCH_DIR))
    import redisstats

    return sum(redisstats.commandstats(port).values())


def main() -> int:
    args = parse_args()
    if args.worker:
        worker(args)
        return 0
    sys.path.insert(0, str(BENCH_DIR))
    import procs
    from variants import VARIANTS

    if args.variant not in VARIANTS:
        sys.exit(f"unknown variant {args.variant}: choose from {', '.join(VARIANTS)}")
    redis = None
    try:
        if VARIANTS[args.variant].uses_redis:
            tmp = Path(tempfile.mkdtemp(prefix="policy-path-"))
            redis = procs.start("redis", [args.redis_server, "--port", str(args.redis_port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"], args.load_cpu, tmp, cwd=tmp)
            procs.wait_redis(redis, args.redis_port)
        plain = run_one(args, "plain")
        before = redis_commands(args.redis_port) if redis else 0
        policies = run_one(args, args.variant)
        commands = redis_commands(args.redis_port) - before if redis else None
    finally:
        if redis is not None:
            procs.stop(redis)
    load = Path("/proc/loadavg").read_text().split()[0]
    if args.calls:
        p, v = plain["calls_per_request"], policies["calls_per_request"]
        print(f"code {args.code}: Python function calls per request (cProfile)")
        print(f"  plain       {p:7.1f}")
        print(f"  {args.variant:<11} {v:7.1f}")
        print(f"  policy path {v - p:7.1f}; the most called in {args.variant}, per request:")
        for name, n in policies["top"]:
            print(f"    {n:6.2f}  {name}")
        return 0
    p, v = min(plain["us_per_request"]), min(policies["us_per_request"])
    print(f"code {args.code}, load average {load}, fastest of {args.rounds} rounds")
    print(f"  plain       {p:7.2f} µs/request  (rounds {', '.join(f'{x:.1f}' for x in plain['us_per_request'])})")
    print(f"  {args.variant:<11} {v:7.2f} µs/request  (rounds "
          f"{', '.join(f'{x:.1f}' for x in policies['us_per_request'])})")
    print(f"  policy path {v - p:7.2f} µs/request")
    if commands is not None:
        total = policies["requests"] * (args.rounds + 0) + 100 * args.concurrency
        print(f"  Redis commands per request {commands / total:.3f} (commandstats, warm-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
