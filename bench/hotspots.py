"""Profile one sidecar variant under load: where its core goes, per request.

Starts nginx (bench/upstream.conf), the bench's redis-server if the variant needs it, and the sidecar
as bench/run.py does (pinned to --proxy-cpu, everything else on --load-cpu), then drives it with
``wrk -c50`` for a fixed time and either

- ``--cprofile``: runs the sidecar under cProfile (bench/profiled.py: on for the loaded window only)
  and prints, for the functions of the policy path
  (guard, limiter, policy/, state/, tenacity) and the largest others, the calls and the µs of the
  sidecar's core per request (cProfile's own cost included: compare two runs of this script, never
  with wrk figures), or
- ``--py-spy``: samples the loaded sidecar with ``py-spy record --pid`` into a flame graph SVG.

Each is bounded: ``--seconds`` of load after a 1 s warm-up, every child stopped at the end.

    python bench/hotspots.py policies --cprofile                 # the table, this tree's code
    python bench/hotspots.py policies --py-spy --svg bench/flames/policies-after.svg
    python bench/hotspots.py policies --cprofile --code /tmp/base-policy   # another tree's code
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import loads
import procs
import run
from variants import VARIANTS, Variant, write_config

# Functions of the policy path, by file: every one of them is listed, whatever its share.
POLICY_FILES = ("proxy/guard.py", "proxy/limiter.py", "proxy/policy/", "proxy/state/", "tenacity/")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", choices=list(VARIANTS))
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--cprofile", action="store_true", help="per-request µs and calls of the policy path")
    how.add_argument("--py-spy", action="store_true", help="a flame graph of the loaded sidecar (--svg)")
    p.add_argument("--svg", type=Path, help="where py-spy writes the flame graph")
    p.add_argument("--format", default="flamegraph", choices=["flamegraph", "raw", "speedscope"],
                   help="py-spy's output format (raw: collapsed stacks, one line each, for reading as text)")
    p.add_argument("--stats", type=Path, help="also keep cProfile's raw stats in this file")
    p.add_argument("--code", type=Path, default=run.REPO_DIR, help="the tree whose proxy/ runs (default: this one)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25, help="other functions listed, by own time")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                   help="when the variant does not say (default on: the production default)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--upstream-port", type=int, default=18200)
    p.add_argument("--sidecar-port", type=int, default=18280)
    p.add_argument("--admin-port", type=int, default=19981)
    p.add_argument("--redis-port", type=int, default=16389)
    p.add_argument("--redis-server", default="/usr/bin/redis-server")
    p.add_argument("--redis-timeout", default="1s",
                   help="state.redis_timeout of a Redis variant (default 1s, the most allowed: a profiled sidecar "
                        "is slow, and must not fall back to deciding without Redis)")
    args = p.parse_args()
    if args.py_spy and args.svg is None:
        p.error("--py-spy needs --svg FILE")
    if not 1 <= args.seconds <= 120:
        p.error("--seconds must be 1-120")
    return args


def start_sidecar(args: argparse.Namespace, tmp: Path, variant: Variant, services: list[procs.Service]) -> procs.Service:
    """The variant from ``args.code``, under cProfile when asked; ready before it returns."""
    conf = write_config(
        tmp / "sidecar", variant, port=args.sidecar_port, admin_port=args.admin_port,
        upstream_port=args.upstream_port,
        access_log=args.access_log if variant.access_log is None else variant.access_log,
        redis_port=args.redis_port if variant.uses_redis else None,
    )
    if variant.uses_redis:
        conf.write_text(conf.read_text().replace("  backend: redis\n",
                                                 f"  backend: redis\n  redis_timeout: {args.redis_timeout}\n"))
    cmd = [args.python]
    cmd += [str(run.BENCH_DIR / "profiled.py"), str(tmp / "sidecar.prof")] if args.cprofile else ["-m", "proxy"]
    cmd += ["run", "--config", str(conf)]
    env = run.sidecar_env(variant, args.code.resolve(), tmp / "sidecar")
    sidecar = procs.start("sidecar", cmd, args.proxy_cpu, tmp, cwd=args.code, env=env)
    services.append(sidecar)
    procs.wait_ready(sidecar, args.admin_port, "/healthz", deadline=30)
    procs.wait_ready(sidecar, args.sidecar_port, "/bench" + run.PATH, deadline=5)
    return sidecar


def answered(admin_port: int) -> int:
    """Requests the sidecar answered so far (its own counter)."""
    return int(run.parse_metrics(procs.http_text(admin_port, "/metrics"))["requests"])


def report(stats_file: Path, requests: int, top: int) -> str:
    """Policy-path functions (all) and the ``top`` others by own time: calls and µs per request."""
    stats = pstats.Stats(str(stats_file))
    rows = []
    for (path, line, name), (_, calls, own, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((path, line, name, calls, own, cum))
    total = sum(r[4] for r in rows)
    lines = [(f"{requests:,} requests; {total / requests * 1e6:,.1f} µs of profiled CPU per request "
              "(cProfile's own cost included)"), "",
             f"{'calls/req':>9} {'own µs/req':>10} {'cum µs/req':>10}  function"]

    def fmt(row: tuple[str, int, str, int, float, float]) -> str:
        path, line, name, calls, own, cum = row
        if "site-packages/" in path:
            short = path.split("site-packages/")[-1]
        elif "/proxy/" in path:  # the tree under test, wherever it is
            short = "proxy/" + path.rsplit("/proxy/", 1)[1]
        else:
            short = path
        return f"{calls / requests:9.2f} {own / requests * 1e6:10.2f} {cum / requests * 1e6:10.2f}  {short}:{line}({name})"

    policy = [r for r in rows if any(part in r[0] for part in POLICY_FILES)]
    lines.append("-- policy path (guard, limiter, policy/, state/, tenacity), by cumulative time")
    lines += [fmt(r) for r in sorted(policy, key=lambda r: -r[5]) if r[3] >= requests * 0.01]
    lines.append(f"-- policy path own time: {sum(r[4] for r in policy) / requests * 1e6:.1f} µs/req; "
                 f"{sum(r[3] for r in policy) / requests:.1f} of {sum(r[3] for r in rows) / requests:.1f} "
                 "function calls per request (calls do not depend on how busy the machine is)")
    lines.append(f"-- top {top} of everything, by own time")
    lines += [fmt(r) for r in sorted(rows, key=lambda r: -r[4])[:top]]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.sched_setaffinity(0, {args.load_cpu})
    variant = VARIANTS[args.variant]
    nginx = run.find_nginx()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-profile-"))
    tmp.chmod(0o755)
    services: list[procs.Service] = []
    try:
        conf = run.write_nginx_conf(tmp, args.upstream_port)
        services.append(procs.start("nginx", [nginx, "-c", str(conf), "-p", str(tmp), "-e", "stderr", "-g",
                                               "daemon off;"], args.load_cpu, tmp))
        procs.wait_ready(services[-1], args.upstream_port, run.PATH)
        if variant.uses_redis:
            services.append(procs.start("redis", [args.redis_server, "--port", str(args.redis_port), "--bind",
                                                  "127.0.0.1", "--save", "", "--appendonly", "no"],
                                        args.load_cpu, tmp, cwd=tmp))
            procs.wait_redis(services[-1], args.redis_port)
        sidecar = start_sidecar(args, tmp, variant, services)
        url = f"http://127.0.0.1:{args.sidecar_port}/bench{run.PATH}"
        loads.wrk(url, 1, args.connections, args.load_cpu)  # warm-up
        before = answered(args.admin_port)
        if args.cprofile:
            os.kill(sidecar.proc.pid, signal.SIGUSR1)  # profile from here (bench/profiled.py)
        spy = None
        if args.py_spy:
            args.svg.parent.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen(procs.pinned(args.load_cpu, [
                "py-spy", "record", "--pid", str(sidecar.proc.pid), "--rate", str(args.rate), "--duration",
                str(round(args.seconds)), "--format", args.format, "--output", str(args.svg), "--nonblocking"]),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)  # attached before the load starts
        result = loads.wrk(url, args.seconds, args.connections, args.load_cpu)
        if args.cprofile:
            time.sleep(0.2)  # the requests wrk stopped waiting for are answered, and counted
            os.kill(sidecar.proc.pid, signal.SIGUSR2)  # to here: the stats are written
        requests = answered(args.admin_port) - before
        print(f"{args.variant} from {args.code}: wrk {result['rps']:,.0f} req/s, {requests:,} answered, "
              f"errors {result['non_2xx'] + result['socket_errors']}; load average "
              f"{Path('/proc/loadavg').read_text().split()[0]}", file=sys.stderr)
        if spy is not None:
            _, err = spy.communicate(timeout=args.seconds + 30)
            if spy.returncode != 0:
                sys.exit(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")
            print(f"flame graph written to {args.svg}", file=sys.stderr)
        if args.cprofile:
            stats = tmp / "sidecar.prof"
            end = time.monotonic() + 30
            while not stats.exists() and time.monotonic() < end:
                time.sleep(0.1)
            time.sleep(0.5)  # dump_stats writes the file in one go, but let it finish
            print(report(stats, requests, args.top))
            if args.stats:
                shutil.copy(tmp / "sidecar.prof", args.stats)
    finally:
        for service in reversed(services):
            procs.stop(service)
        if os.environ.get("KEEP_TMP"):
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
