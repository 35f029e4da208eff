"""Where a loaded sidecar spends its CPU: a py-spy flame graph, or cProfile per request.

    python bench/profiling.py --flame bench/flames/after.svg       # py-spy, 20 s of wrk -c50
    python bench/profiling.py --cprofile                           # cProfile: per-request us and calls
    python bench/profiling.py --cprofile --code /tmp/base          # the same for another tree's code

One nginx (bench/upstream.conf) and one sidecar (the ``plain`` variant: no policies, access log on,
as in production), pinned as bench/run.py pins them: the sidecar alone on --proxy-cpu, nginx and wrk
on --load-cpu. With --cprofile the sidecar runs under this file's ``--child`` mode, which turns the
profiler on only while wrk runs (SIGUSR1 / SIGUSR2), so start-up and warm-up are not in the figures;
they are divided by the requests the sidecar answered in that window (its own counter).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import loads
import procs
from run import PATH, find_nginx, write_nginx_conf
from variants import VARIANTS, write_config

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
_REQUESTS = re.compile(r"^resilience_proxy_requests_total\{[^}]*\} (\S+)$", re.MULTILINE)


def child(config: str, out: str) -> int:
    """Run one sidecar worker; SIGUSR1 starts the profiler, SIGUSR2 stops it and writes ``out``."""
    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())

    def dump(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR2, dump)
    sys.path.insert(0, os.getcwd())
    from proxy.runtime.process import run_worker

    return run_worker(config, watch_interval=0)


def answered(admin_port: int) -> int:
    """Requests the sidecar has answered so far (every label set summed)."""
    return sum(round(float(v)) for v in _REQUESTS.findall(procs.http_text(admin_port, "/metrics")))


def report(stats_file: Path, requests: int, top: int) -> str:
    """The functions with the most own time, in us and calls per request."""
    stats = pstats.Stats(str(stats_file))
    rows = []
    total = 0.0
    for (file, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        rows.append((tottime, cumtime, calls, f"{Path(file).name}:{line}({name})"))
    rows.sort(reverse=True)
    lines = [f"{requests} requests profiled; {total / requests * 1e6:.1f} us of profiled CPU per request",
             f"{'own us/req':>10} {'cum us/req':>10} {'calls/req':>9} {'own share':>9}  function"]
    for tottime, cumtime, calls, where in rows[:top]:
        lines.append(f"{tottime / requests * 1e6:10.2f} {cumtime / requests * 1e6:10.2f} {calls / requests:9.2f} "
                     f"{tottime / total:9.1%}  {where}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--flame", type=Path, help="write a py-spy flame graph (SVG) here")
    p.add_argument("--speedscope", type=Path, help="write a py-spy speedscope profile here")
    p.add_argument("--cprofile", action="store_true", help="print cProfile's per-request costs")
    p.add_argument("--stats", type=Path, help="with --cprofile: also keep the raw pstats file here")
    p.add_argument("--code", type=Path, default=REPO_DIR, help="the tree whose sidecar runs (default: this one)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--no-access-log", action="store_true")
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--upstream-port", type=int, default=18660)
    p.add_argument("--port", type=int, default=18670)
    p.add_argument("--admin-port", type=int, default=19670)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    if not (args.flame or args.speedscope or args.cprofile):
        p.error("say what to record: --flame, --speedscope and/or --cprofile")
    if not 1 <= args.seconds <= 120:
        p.error("--seconds must be 1-120")
    busy = [port for port in (args.upstream_port, args.port, args.admin_port) if procs.port_in_use(port)]
    if busy:
        sys.exit(f"ports already in use on 127.0.0.1: {busy}")
    tmp = Path(tempfile.mkdtemp(prefix="proxy-profile-"))
    tmp.chmod(0o755)
    services: list[procs.Service] = []
    try:
        conf = write_nginx_conf(tmp, args.upstream_port)
        services.append(procs.start("nginx", [find_nginx(), "-c", str(conf), "-p", str(tmp), "-e", "stderr",
                                              "-g", "daemon off;"], args.load_cpu, tmp))
        procs.wait_ready(services[-1], args.upstream_port, PATH)
        sidecar_conf = write_config(tmp / "sidecar", VARIANTS["plain"], port=args.port, admin_port=args.admin_port,
                                    upstream_port=args.upstream_port, access_log=not args.no_access_log)
        stats_file = tmp / "sidecar.pstats"
        cmd = ([sys.executable, str(BENCH_DIR / "profiling.py"), "--child", str(sidecar_conf), str(stats_file)]
               if args.cprofile else [sys.executable, "-m", "proxy", "run", "--config", str(sidecar_conf)])
        env = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
        env["PYTHONPATH"] = f"{args.code.resolve()}{os.pathsep}{BENCH_DIR}"
        sidecar = procs.start("sidecar", cmd, args.proxy_cpu, tmp, cwd=args.code.resolve(), env=env)
        services.append(sidecar)
        procs.wait_ready(sidecar, args.admin_port, "/healthz", deadline=20)
        url = f"http://127.0.0.1:{args.port}/bench{PATH}"
        procs.wait_ready(sidecar, args.port, "/bench" + PATH, deadline=5)
        loads.wrk(url, 2, args.connections, args.load_cpu)  # warm-up: pools, code paths
        before = answered(args.admin_port)
        spy = None
        if args.flame or args.speedscope:
            out = args.flame or args.speedscope
            fmt = "flamegraph" if args.flame else "speedscope"
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(sidecar.proc.pid), "-o", str(out),
                                    "--format", fmt, "--rate", str(args.rate), "--duration", str(round(args.seconds)),
                                    "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if args.cprofile:
            os.kill(sidecar.proc.pid, signal.SIGUSR1)
        result = loads.wrk(url, args.seconds, args.connections, args.load_cpu)
        if args.cprofile:
            os.kill(sidecar.proc.pid, signal.SIGUSR2)
        requests = answered(args.admin_port) - before
        if spy is not None:
            _, err = spy.communicate(timeout=args.seconds + 30)
            if spy.returncode != 0:
                print(err.decode(errors="replace"), file=sys.stderr)
        print(f"wrk -c{args.connections} {args.seconds:g} s: {result['rps']:.0f} req/s, {requests} answered; "
              f"load average {Path('/proc/loadavg').read_text().split()[0]}")
        if args.cprofile:
            deadline = time.monotonic() + 10
            while not stats_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            print(report(stats_file, requests, args.top))
            if args.stats:
                shutil.copy(stats_file, args.stats)
    finally:
        for service in reversed(services):
            procs.stop(service)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
