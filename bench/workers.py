"""``--workers 2`` against one worker on a 2-core machine: throughput, CPU per request, who got what.

    python bench/workers.py                       # 5 interleaved rounds of 5 s, about 2 minutes
    python bench/workers.py --rounds 3 --seconds 3 --out workers.json

Two sidecars (the ``plain`` variant, access log on, as in production) stay up side by side: one
process (``run``, pinned to --proxy-cpu, metrics in memory) and ``run --workers 2`` (supervisor and
workers on both cores; the workers keep file-backed metrics, as ``--workers`` does). nginx and wrk
are pinned to --load-cpu, so with two workers the load generator shares a core with one of them:
the figure is what a 2-core pod serving its own load generator would do, not what two cores can do.
(``--two-workers-cpus 0`` puts both workers on the one worker's core instead: then the figures
compare what each request costs with one and with two workers, all else equal.) To show that, every
``wrk`` run also records the CPU time each party used during it (the workers,
nginx, wrk itself, from /proc) and the load average: the load side's share of the two cores is the
part of the machine the workers could not have.

Per run: requests per second, CPU microseconds per request summed over the serving processes (equal
for one and two workers means nothing serialises or costs more per request with two), and how the
kernel's SO_REUSEPORT hashing spread the wrk connections' requests over the workers (each access line
names its worker's pid).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import procs
from loads import HEADERS
from run import PATH, find_nginx, write_nginx_conf
from variants import VARIANTS, write_config

_PID = re.compile(r'"msg":"request","pid":(\d+)')


def wrk(url: str, seconds: float, connections: int, cpu: int) -> tuple[dict[str, float], float]:
    """One wrk run: its figures, and the CPU seconds wrk itself used."""
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--timeout", "2s", *[a for name, value in HEADERS for a in ("-H", f"{name}: {value}")], url]
    before = os.times()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    after = os.times()
    used = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk failed or got errors:\n{out}")
    return {"rps": float(rps.group(1)), "requests": int(total.group(1))}, used


def measure(name: str, url: str, leader: int, log: Path, nginx: int, args: argparse.Namespace) -> dict[str, Any]:
    """One wrk run against one sidecar, with the CPU each party used and the requests per worker."""
    time.sleep(0.2)  # the previous run's access lines are flushed (every 50 ms)
    lines_before = Counter(_PID.findall(log.read_text(errors="replace")))
    sidecar_before, nginx_before = procs.group_cpu_seconds(leader), procs.group_cpu_seconds(nginx)
    wall = time.monotonic()
    result, wrk_cpu = wrk(url, args.seconds, args.connections, args.load_cpu)
    wall = time.monotonic() - wall
    sidecar_cpu = procs.group_cpu_seconds(leader) - sidecar_before
    nginx_cpu = procs.group_cpu_seconds(nginx) - nginx_before
    time.sleep(0.2)
    per_pid = Counter(_PID.findall(log.read_text(errors="replace"))) - lines_before
    return {
        **result,
        "wall_s": round(wall, 2),
        "sidecar_cpu_s": round(sidecar_cpu, 2),
        "cpu_us_per_request": round(sidecar_cpu / max(1, result["requests"]) * 1e6, 1),
        "nginx_cpu_s": round(nginx_cpu, 2),
        "wrk_cpu_s": round(wrk_cpu, 2),
        "requests_per_worker": sorted(per_pid.values(), reverse=True),
        "loadavg": float(Path("/proc/loadavg").read_text().split()[0]),
    }


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians per target, and the per-round ratio of two workers to one."""
    out: dict[str, Any] = {}
    for name, rounds in runs.items():
        out[name] = {key: statistics.median(r[key] for r in rounds)
                     for key in ("rps", "cpu_us_per_request", "sidecar_cpu_s", "nginx_cpu_s", "wrk_cpu_s", "wall_s")}
    ratios = [two["rps"] / one["rps"] for one, two in zip(runs["1 worker"], runs["2 workers"], strict=True)]
    out["ratio_2_to_1"] = {"median": round(statistics.median(ratios), 3), "rounds": [round(r, 3) for r in ratios]}
    two = runs["2 workers"]
    out["load_side_share_of_2_cores"] = round(statistics.median(
        (r["nginx_cpu_s"] + r["wrk_cpu_s"]) / (2 * r["wall_s"]) for r in two), 3)
    out["spread_over_workers"] = [r["requests_per_worker"] for r in two]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0, help="wrk seconds per sidecar per round")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent, help="the tree to run")
    p.add_argument("--proxy-cpu", type=int, default=0, help="the one worker's core (two workers get both)")
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--two-workers-cpus", metavar="LIST",
                   help="cores for the two workers (default: --proxy-cpu and --load-cpu). Giving only --proxy-cpu "
                        "puts both on the one worker's core: what two workers cost per request, without a second core")
    p.add_argument("--upstream-port", type=int, default=18560)
    p.add_argument("--port", type=int, default=18570, help="one worker; two workers use the next ports (+1)")
    p.add_argument("--admin-port", type=int, default=19570)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if not (1 <= args.rounds <= 10 and 1 <= args.seconds <= 60):
        p.error("rounds 1-10, seconds 1-60")
    ports = [args.upstream_port, args.port, args.port + 1, args.admin_port, args.admin_port + 1]
    busy = [port for port in ports if procs.port_in_use(port)]
    if busy:
        sys.exit(f"ports already in use on 127.0.0.1: {busy}")
    tmp = Path(tempfile.mkdtemp(prefix="proxy-workers-"))
    tmp.chmod(0o755)
    services: list[procs.Service] = []
    both = args.two_workers_cpus or f"{args.proxy_cpu},{args.load_cpu}"
    try:
        conf = write_nginx_conf(tmp, args.upstream_port)
        services.append(procs.start("nginx", [find_nginx(), "-c", str(conf), "-p", str(tmp), "-e", "stderr",
                                              "-g", "daemon off;"], args.load_cpu, tmp))
        nginx = services[-1]
        procs.wait_ready(nginx, args.upstream_port, PATH)
        env = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
        env["PYTHONPATH"] = str(args.code.resolve())
        targets: dict[str, tuple[str, procs.Service]] = {}
        for index, (name, workers, cpus) in enumerate((("1 worker", 1, str(args.proxy_cpu)), ("2 workers", 2, both))):
            port, admin = args.port + index, args.admin_port + index
            config = write_config(tmp / f"w{workers}", VARIANTS["plain"], port=port, admin_port=admin,
                                  upstream_port=args.upstream_port, access_log=True)
            cmd = [sys.executable, "-m", "proxy", "run", "--config", str(config), "--workers", str(workers)]
            service = procs.start(f"w{workers}", cmd, cpus, tmp, cwd=args.code.resolve(), env=env)
            services.append(service)
            procs.wait_ready(service, admin, "/healthz", deadline=30)
            procs.wait_ready(service, port, "/bench" + PATH, deadline=10)
            targets[name] = (f"http://127.0.0.1:{port}/bench{PATH}", service)
        for url, _ in targets.values():
            wrk(url, 2, args.connections, args.load_cpu)  # warm-up: every worker's pool and code paths
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for number in range(1, args.rounds + 1):
            for name, (url, service) in targets.items():
                runs[name].append(measure(name, url, service.proc.pid, service.log, nginx.proc.pid, args))
                run = runs[name][-1]
                print(f"round {number} {name}: {run['rps']:.0f} req/s, {run['cpu_us_per_request']} us CPU/request, "
                      f"per worker {run['requests_per_worker']}, nginx {run['nginx_cpu_s']} s + wrk "
                      f"{run['wrk_cpu_s']} s CPU in {run['wall_s']} s, load {run['loadavg']}", file=sys.stderr)
    finally:
        for service in reversed(services):
            procs.stop(service)
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"runs": runs, "summary": summary(runs)}
    print(json.dumps(result["summary"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
