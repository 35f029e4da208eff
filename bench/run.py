"""One command for the whole proxy comparison: nginx direct vs reference aiohttp proxy vs sidecar.

Pinning (2-core machine): the proxy under test runs alone on --proxy-cpu (0); nginx, wrk, openloop,
the bench's own redis-server and this runner share --load-cpu (1). The proxy is then the only thing
its core does, and the load side (nginx plus wrk: about 13% of their core while the proxy is
saturated) never steals its cycles. With several --sidecars, each variant is its own process on its
own ports, all on --proxy-cpu; only the one being measured is busy.

    /work/venv/bin/python bench/run.py            # full run, a few minutes
    /work/venv/bin/python bench/run.py --quick    # smoke run, under a minute
    /work/venv/bin/python bench/run.py --sidecars plain,breakers,breakers-redis   # breaker cost
    /work/venv/bin/python bench/run.py --sidecars plain,limits-redis              # rate-limit cost
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loads
import procs
import redisstats
from report import BASELINE_SUFFIX, aggregate, table, verdict
from variants import VARIANTS, Variant, parse_variants, ports_of, write_config

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PATH = "/2010-04-01/Accounts/AC123/Messages.json?PageSize=20"
BACKEND_GAUGE = "resilience_proxy_state_backend_up"
# Sample lines of the sidecar's /metrics that a Redis variant's wrk run is checked against.
_SAMPLE = re.compile(r"^(resilience_proxy_\w+?)(?:\{([^}]*)\})? (\S+)$", re.MULTILINE)
_OUTCOME = re.compile(r'outcome="([^"]*)"')


def parse_args() -> argparse.Namespace:
    """Durations, rates, ports and CPUs; --quick picks the smoke-run defaults."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 3 s per load, 2,000 req/s only")
    p.add_argument("--rounds", type=int, help="interleaved rounds, medians reported (default 3, quick 1)")
    p.add_argument("--wrk-seconds", type=float, help="wrk seconds per target per round (default 5, quick 3)")
    p.add_argument("--openloop-seconds", type=float, help="measured open-loop seconds per run (default 10, quick 3)")
    p.add_argument("--warmup", type=float, help="open-loop warm-up seconds, excluded (default 2, quick 1)")
    p.add_argument("--rates", help="comma-separated open-loop rates (default 500,2000; quick 2000)")
    p.add_argument("--wrk-connections", type=int, default=32)
    p.add_argument("--skip-sidecar", action="store_true", help="measure direct and reference only")
    p.add_argument(
        "--sidecars",
        default="plain",
        help=f"comma-separated sidecar variants, each its own process (default plain; {', '.join(VARIANTS)})",
    )
    p.add_argument("--access-log", action="store_true",
                   help="sidecar writes its JSON access line per request (the production default) to its log file")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run every sidecar variant from the code in DIR (a checkout of main, say) as "
                        "TARGET@baseline, measured in the same interleaved rounds: before/after in one run")
    p.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    p.add_argument("--python", default=sys.executable, help="interpreter for the proxies and openloop")
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--upstream-port", type=int, default=18000)
    p.add_argument("--reference-port", type=int, default=18081)
    p.add_argument("--sidecar-port", type=int, default=18080)
    p.add_argument("--admin-port", type=int, default=19901)
    p.add_argument("--redis-port", type=int, default=16379, help="the bench's own redis-server (Redis variants)")
    p.add_argument("--redis-server", default="/usr/bin/redis-server")
    p.add_argument("--keep-tmp", action="store_true", help="keep configs and logs of the children")
    args = p.parse_args()
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.wrk_seconds = args.wrk_seconds or (3.0 if quick else 5.0)
    args.openloop_seconds = args.openloop_seconds or (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.rates = [int(r) for r in (args.rates or ("2000" if quick else "500,2000")).split(",")]
    if not (1 <= args.rounds <= 10 and 0 < args.wrk_seconds <= 120 and 0 < args.openloop_seconds <= 120):
        p.error("rounds must be 1-10, durations in (0, 120] seconds")
    try:
        args.variants = [] if args.skip_sidecar else parse_variants(args.sidecars)
    except ValueError as exc:
        p.error(str(exc))
    if args.baseline is not None and not (args.baseline / "proxy" / "__main__.py").exists():
        p.error(f"--baseline {args.baseline}: no proxy/__main__.py there")
    return args


def sidecar_runs(args: argparse.Namespace) -> list[tuple[Variant, Path, str]]:
    """(variant, code directory, target suffix) of every sidecar process: this tree's, then the baseline's."""
    runs = [(v, REPO_DIR, "") for v in args.variants]
    if args.baseline is not None:
        runs += [(v, args.baseline.resolve(), BASELINE_SUFFIX) for v in args.variants]
    return runs


def bench_ports(args: argparse.Namespace) -> list[int]:
    """Every port this run will listen on; each must be free and none may repeat."""
    ports = [args.upstream_port, args.reference_port]
    for index, _ in enumerate(sidecar_runs(args)):
        ports += ports_of(index, args.sidecar_port, args.admin_port)
    if any(v.uses_redis for v in args.variants):
        ports.append(args.redis_port)
    return ports


def find_nginx() -> str:
    """Path to nginx; installs nginx-light when root (never letting apt start it on port 80)."""
    found = shutil.which("nginx") or (os.access("/usr/sbin/nginx", os.X_OK) and "/usr/sbin/nginx")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("nginx not found: install it with `apt-get install -y nginx-light` (as root), then rerun")
    print("nginx not found: installing nginx-light", file=sys.stderr)
    guard = Path("/usr/sbin/policy-rc.d")
    made_guard = not guard.exists()
    if made_guard:
        guard.write_text("#!/bin/sh\nexit 101\n")
        guard.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "nginx-light"], env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "nginx-light"], env=env, check=True)
    finally:
        if made_guard:
            guard.unlink()
    return shutil.which("nginx") or "/usr/sbin/nginx"


def write_nginx_conf(tmp: Path, port: int) -> Path:
    """Fill bench/upstream.conf for this run's prefix and port."""
    template = string.Template((BENCH_DIR / "upstream.conf").read_text())
    conf = tmp / "nginx.conf"
    conf.write_text(template.substitute(prefix=tmp, port=port))
    return conf


def versions(python: str, nginx: str) -> dict[str, str]:
    """What produced the numbers, for the README and the JSON file."""
    probe = "import sys, aiohttp, uvloop; print(sys.version.split()[0], aiohttp.__version__, uvloop.__version__)"
    py, aiohttp_v, uvloop_v = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    nginx_v = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr.strip().split("/")[-1]
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split()[1:2]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return {
        "python": py,
        "aiohttp": aiohttp_v,
        "uvloop": uvloop_v,
        "nginx": nginx_v,
        "wrk": "".join(wrk_v),
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "loadavg": Path("/proc/loadavg").read_text().split()[0],
    }


def start_servers(
    args: argparse.Namespace, nginx: str, tmp: Path, services: list[procs.Service]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Start nginx, the reference proxy, Redis if a variant needs it, and each sidecar variant.

    Returns each target's URL (or its start error), and the admin port of every target whose Redis
    commands are counted. All stay up for the whole run so the targets can be measured in interleaved
    rounds; a proxy not being measured sits idle in epoll and costs its core nothing.
    """
    targets: dict[str, Any] = {}
    conf = write_nginx_conf(tmp, args.upstream_port)
    nginx_cmd = [nginx, "-c", str(conf), "-p", str(tmp), "-e", "stderr", "-g", "daemon off;"]
    services.append(procs.start("nginx", nginx_cmd, args.load_cpu, tmp))
    procs.wait_ready(services[-1], args.upstream_port, PATH)
    targets["direct"] = f"http://127.0.0.1:{args.upstream_port}{PATH}"

    listen = f"127.0.0.1:{args.reference_port}"
    ref_cmd = [
        args.python,
        str(BENCH_DIR / "refproxy.py"),
        "--listen",
        listen,
        "--upstream",
        f"http://127.0.0.1:{args.upstream_port}",
    ]
    services.append(procs.start("reference", ref_cmd, args.proxy_cpu, tmp))
    procs.wait_ready(services[-1], args.reference_port, "/bench" + PATH)
    targets["reference"] = f"http://{listen}/bench{PATH}"

    redis_error = start_redis(args, tmp, services) if any(v.uses_redis for v in args.variants) else None
    redis_watch: dict[str, int] = {}
    for index, (variant, code, suffix) in enumerate(sidecar_runs(args)):
        port, admin_port = ports_of(index, args.sidecar_port, args.admin_port)
        target = variant.target + suffix
        if variant.uses_redis and redis_error is not None:
            targets[target] = {"error": f"redis-server did not start: {redis_error}"}
            continue
        targets[target] = start_sidecar(args, tmp, services, variant, port, admin_port, code, suffix)
        if variant.uses_redis and isinstance(targets[target], str):
            redis_watch[target] = admin_port
    return targets, redis_watch


def start_redis(args: argparse.Namespace, tmp: Path, services: list[procs.Service]) -> str | None:
    """The bench's own redis-server, on the load CPU, no persistence; None when up, else why not."""
    cmd = [args.redis_server, "--port", str(args.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    services.append(procs.start("redis", cmd, args.load_cpu, tmp, cwd=tmp))
    try:
        procs.wait_redis(services[-1], args.redis_port)
    except procs.ServiceError as exc:
        print(f"\nREDIS DID NOT START: {exc}\n", file=sys.stderr)
        procs.stop(services[-1])
        return str(exc)
    return None


def sidecar_env(variant: Variant, code: Path, confdir: Path) -> dict[str, str]:
    """The sidecar's environment: its code first on the path; PROMETHEUS_MULTIPROC_DIR only where the
    variant says so, pointing at an existing directory (as the image's ``install -d`` made one)."""
    env = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(code)
    if variant.multiproc_env:
        metrics = confdir / "metrics"
        metrics.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    return env


def start_sidecar(
    args: argparse.Namespace, tmp: Path, services: list[procs.Service], variant: Variant, port: int, admin_port: int,
    code: Path = REPO_DIR, suffix: str = "",
) -> Any:
    """Start one sidecar variant (from the code in ``code``) from a generated config; a start failure is
    reported, not fatal."""
    target = variant.target + suffix
    if not (code / "proxy" / "__main__.py").exists():
        msg = f"{code / 'proxy' / '__main__.py'} does not exist yet"
        print(f"{target} skipped: {msg}", file=sys.stderr)
        return {"error": msg}
    conf = write_config(
        tmp / target,
        variant,
        port=port,
        admin_port=admin_port,
        upstream_port=args.upstream_port,
        access_log=args.access_log if variant.access_log is None else variant.access_log,
        redis_port=args.redis_port if variant.uses_redis else None,
    )
    cmd = [args.python, "-m", "proxy", "run", "--config", str(conf)]
    env = sidecar_env(variant, code, tmp / target)
    sidecar = procs.start(target, cmd, args.proxy_cpu, tmp, cwd=code, env=env)
    services.append(sidecar)
    try:
        procs.wait_ready(sidecar, admin_port, "/healthz", deadline=20)
        procs.wait_ready(sidecar, port, "/bench" + PATH, deadline=5)
        if variant.uses_redis:
            check_redis_in_use(sidecar, args.redis_port, admin_port)
    except procs.ServiceError as exc:
        print(f"\n{target.upper()} DID NOT START: {exc}\n", file=sys.stderr)
        procs.stop(sidecar)
        return {"error": str(exc), "command": " ".join(cmd), "config": conf.read_text()}
    return f"http://127.0.0.1:{port}/bench{PATH}"


def backend_up(admin_port: int) -> float | None:
    """The sidecar's state-backend gauge from its /metrics (1 up, 0 down), None when absent."""
    return parse_metrics(procs.http_text(admin_port, "/metrics"))["backend_up"]


def parse_metrics(text: str) -> dict[str, Any]:
    """From the sidecar's /metrics: its backend gauge, the requests it answered (all labels), and its
    rate-limit decisions by outcome (all limits). Requests that wrk gave up on when it stopped were still
    answered, so the answered count is the exact number of requests the sidecar served."""
    out: dict[str, Any] = {"backend_up": None, "requests": 0, "limit_decisions": {}}
    for name, labels, value in _SAMPLE.findall(text):
        if name == BACKEND_GAUGE:
            out["backend_up"] = float(value)
        elif name == "resilience_proxy_requests_total":
            out["requests"] += round(float(value))
        elif name == "resilience_proxy_rate_limit_decisions_total":
            outcome = _OUTCOME.search(labels or "")
            key = outcome.group(1) if outcome else "?"
            out["limit_decisions"][key] = out["limit_decisions"].get(key, 0) + round(float(value))
    return out


def check_redis_in_use(sidecar: procs.Service, redis_port: int, admin_port: int, deadline: float = 5.0) -> None:
    """Make sure the Redis variant really runs on Redis, not on its local fallback.

    It must have sent Redis some command (the breakers' background refresh does, at least every second;
    the rate limits' EVALSHA, for the readiness request through /bench) and report its backend up;
    otherwise the numbers would be those of the memory store.
    """
    end = time.monotonic() + deadline
    while True:
        seen = redisstats.commandstats(redis_port)
        used = {name: n for name, n in seen.items() if name not in ("info", "ping")}  # ours
        up = backend_up(admin_port)
        if used and up == 1:
            return
        if time.monotonic() > end:
            raise procs.ServiceError(
                f"{sidecar.name} is not using Redis on :{redis_port} "
                f"(commands seen: {used or 'none'}, {BACKEND_GAUGE} = {up}):\n{sidecar.tail()}"
            )
        time.sleep(0.5)


def wrk_with_cpu(url: str, args: argparse.Namespace, admin_port: int | None, leader: int | None) -> dict[str, Any]:
    """One wrk run, with the CPU the target's processes used per request it completed (``cpu_us``)."""
    before = procs.group_cpu_seconds(leader) if leader is not None else 0.0
    result = wrk_with_redis(url, args, admin_port)
    if leader is not None and result["requests"]:
        result["cpu_us"] = round((procs.group_cpu_seconds(leader) - before) / result["requests"] * 1e6, 1)
    return result


def wrk_with_redis(url: str, args: argparse.Namespace, admin_port: int | None) -> dict[str, Any]:
    """One wrk run; for a Redis variant also the Redis commands it caused, the backend gauge after, and
    from the sidecar's own counters the requests it answered and its rate-limit decisions by outcome."""
    if admin_port is None:
        return loads.wrk(url, args.wrk_seconds, args.wrk_connections, args.load_cpu)
    seen = parse_metrics(procs.http_text(admin_port, "/metrics"))
    before = redisstats.commandstats(args.redis_port)
    result: dict[str, Any] = loads.wrk(url, args.wrk_seconds, args.wrk_connections, args.load_cpu)
    time.sleep(0.1)  # the last batch of outcomes (flushed every ~50 ms) belongs to this run
    after = redisstats.commandstats(args.redis_port)
    now = parse_metrics(procs.http_text(admin_port, "/metrics"))
    decisions = {
        outcome: n - seen["limit_decisions"].get(outcome, 0)
        for outcome, n in sorted(now["limit_decisions"].items())
        if n - seen["limit_decisions"].get(outcome, 0) > 0
    }
    result["redis"] = {
        "commands": redisstats.delta(before, after),
        "backend_up": now["backend_up"],
        "sidecar_requests": now["requests"] - seen["requests"],
        "limit_decisions": decisions,
    }
    return result


def measure_rounds(urls: dict[str, str], args: argparse.Namespace, redis_watch: dict[str, int],
                   leaders: dict[str, int] | None = None) -> dict[str, Any]:
    """Interleave the targets round by round, so a burst of outside load hits all of them alike.
    ``leaders``: each proxy's process (group), whose CPU per request each wrk run records."""
    leaders = leaders or {}
    raw: dict[str, Any] = {name: {"wrk": [], "openloop": {str(r): [] for r in args.rates}} for name in urls}
    for url in urls.values():
        loads.wrk(url, 1, args.wrk_connections, args.load_cpu)  # warm-up: connection pools, code paths
    for n in range(1, args.rounds + 1):
        for name, url in urls.items():
            print(f"[round {n}/{args.rounds}] {name}: wrk {args.wrk_seconds:g} s", file=sys.stderr)
            raw[name]["wrk"].append(wrk_with_cpu(url, args, redis_watch.get(name), leaders.get(name)))
        for rate in args.rates:
            for name, url in urls.items():
                print(
                    f"[round {n}/{args.rounds}] {name}: {rate} req/s for {args.warmup:g}+{args.openloop_seconds:g} s",
                    file=sys.stderr,
                )
                result = loads.openloop(url, rate, args.openloop_seconds, args.warmup, args.load_cpu, args.python)
                raw[name]["openloop"][str(rate)].append(result)
    return raw


def run_all(args: argparse.Namespace, nginx: str, tmp: Path) -> dict[str, Any]:
    """Start everything, measure, and always stop every child, whatever happened."""
    services: list[procs.Service] = []
    try:
        targets, redis_watch = start_servers(args, nginx, tmp, services)
        urls = {name: url for name, url in targets.items() if isinstance(url, str)}
        leaders = {service.name: service.proc.pid for service in services if service.name in urls}
        results = aggregate(measure_rounds(urls, args, redis_watch, leaders))
    finally:
        for service in reversed(services):
            procs.stop(service)
    for name, failure in targets.items():
        if not isinstance(failure, str):
            results[name] = failure
    return results


def main() -> int:
    """Run everything, print the table, write JSON; non-zero exit when a sidecar variant failed to run."""
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks reap the children
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs, proxy and load share a core; numbers will be pessimistic", file=sys.stderr)
        args.proxy_cpu = args.load_cpu = 0
    os.sched_setaffinity(0, {args.load_cpu})  # keep the runner itself off the proxy core
    nginx = find_nginx()
    ports = bench_ports(args)
    if len(set(ports)) != len(ports):
        sys.exit(f"the bench's ports overlap: {sorted(ports)} (each variant adds 10 to --sidecar-port/--admin-port)")
    busy = [p for p in ports if procs.port_in_use(p)]
    if busy:
        sys.exit(f"ports already in use on 127.0.0.1: {busy} (stop whatever listens there or pick other --*-port)")

    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    tmp.chmod(0o755)  # nginx workers drop root privileges and must still reach the prefix
    started = time.time()
    machine = versions(args.python, nginx)  # load average before we add any
    try:
        results = run_all(args, nginx, tmp)
    except procs.ServiceError as exc:
        sys.exit(f"benchmark aborted: {exc}")
    finally:
        if args.keep_tmp:
            print(f"configs and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    settings = {
        "rounds": args.rounds,
        "wrk_seconds": args.wrk_seconds,
        "wrk_connections": args.wrk_connections,
        "openloop_seconds": args.openloop_seconds,
        "warmup_seconds": args.warmup,
        "rates": args.rates,
        "proxy_cpu": args.proxy_cpu,
        "load_cpu": args.load_cpu,
        "sidecars": [v.name for v in args.variants],
        "access_log": args.access_log,
        "baseline": None if args.baseline is None else str(args.baseline),
    }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "versions": machine,
        "settings": settings,
        "results": results,
        "verdict": verdict(results),
    }
    print()
    print(table(results, settings))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nJSON written to {args.out}", file=sys.stderr)
    return 1 if any("error" in results.get(v.target + suffix, {}) for v, _, suffix in sidecar_runs(args)) else 0


if __name__ == "__main__":
    sys.exit(main())
