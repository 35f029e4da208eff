"""Start-up and footprint: seconds from exec to a 200 on ``/readyz``, and resident memory once idle.

A sidecar's start-up and memory are paid in every pod (a native sidecar holds the app container until
it is ready), so this measures them for the shipped example config, as a user runs it:

- ``example``: ``config.example.yaml`` with its ``policies/``, nothing in the environment (memory
  state, no Sentry DSN, no Slack token: what the config does not use should cost nothing);
- ``full``: the same config with everything on: ``state.backend: redis`` (the bench's own
  redis-server), a Sentry DSN and a Slack token (both pointing at a closed loopback port);
- ``floor``: bench/refproxy.py, the bare aiohttp + uvloop proxy, time to its first HTTP answer: what
  the interpreter and this stack cost before any sidecar code runs.

Each round starts every target once (in a rotated order), from a fresh process each time; with
``--baseline DIR`` every sidecar variant also runs from DIR's code in the same rounds, so before and
after are compared as ratios within one run. Medians over rounds.

    python bench/startup.py --baseline /tmp/base-startup            # 9 rounds, about a minute
    python bench/startup.py --rounds 3 --variants example --markdown
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import procs

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VARIANTS = ("example", "full")
BASELINE = "@baseline"
# What the example config reads from the environment: unset for `example`, so nothing leaks in from the shell.
CONFIG_ENV = ("SENTRY_DSN", "SLACK_BOT_TOKEN", "REDIS_URL", "ADMIN_TOKEN", "PROMETHEUS_MULTIPROC_DIR",
              "prometheus_multiproc_dir")
CLOSED_PORT = 9  # discard: nothing listens on loopback, so Slack's token check fails fast and quietly


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9, help="interleaved rounds, medians reported (default 9)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--no-floor", action="store_true", help="skip the bare aiohttp + uvloop proxy")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run every variant from the code in DIR (a checkout of main), in the same rounds")
    p.add_argument("--idle", type=float, default=2.0, help="seconds after ready before reading VmRSS (default 2)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the sidecars")
    p.add_argument("--cpu", type=int, default=0, help="core the started process is pinned to (default 0)")
    p.add_argument("--port", type=int,
                   help="first of three ports used (data, admin, redis; default: three the OS picks free)")
    p.add_argument("--redis-server", default="/usr/bin/redis-server")
    p.add_argument("--out", type=Path, help="also write the raw rounds and medians as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for bench/README.md)")
    args = p.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not 1 <= args.rounds <= 50:
        p.error(f"unknown variant(s) {unknown} (choose from {', '.join(VARIANTS)}); rounds 1-50")
    if args.baseline is not None and not (args.baseline / "proxy" / "__main__.py").exists():
        p.error(f"--baseline {args.baseline}: no proxy/__main__.py there")
    args.ports = procs.free_ports(3) if args.port is None else [args.port, args.port + 1, args.port + 2]
    return args


def example_config(code: Path, variant: str, port: int, admin_port: int) -> str:
    """``code``'s shipped config.example.yaml, on the bench's ports, its policies by absolute path;
    ``full`` also switches the state to Redis and Slack to a loopback URL."""
    text = (code / "config.example.yaml").read_text()
    edits = {"listen: 127.0.0.1:8080": f"listen: 127.0.0.1:{port}",
             "listen: 127.0.0.1:9901": f"listen: 127.0.0.1:{admin_port}",
             "policies: [policies/]": f"policies: [{code / 'policies'}/]"}
    if variant == "full":
        edits |= {"backend: memory": "backend: redis",
                  "base_url: https://slack.com/api/": f"base_url: http://127.0.0.1:{CLOSED_PORT}/api/"}
    for old, new in edits.items():
        if text.count(old) != 1:
            raise SystemExit(f"{code}/config.example.yaml: expected one {old!r} to rewrite")
        text = text.replace(old, new)
    return text


def environment(code: Path, variant: str, redis_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(code)
    if variant == "full":
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        env["SENTRY_DSN"] = f"http://0123456789abcdef@127.0.0.1:{CLOSED_PORT}/1"
        env["SLACK_BOT_TOKEN"] = "xoxb-bench-not-a-token"
    return env


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of ``pid``, in KiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far (from /proc, in clock ticks of usually 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_once(name: str, target: dict[str, Any], args: argparse.Namespace, logdir: Path,
               deadline: float = 20.0) -> dict[str, Any]:
    """Exec the target's command, poll its probe every 2 ms until it answers 200 (the floor: any HTTP
    status), wait ``--idle`` seconds, read its memory, stop it. Seconds from exec to ready, and the memory."""
    started = time.perf_counter()
    service = procs.start(name, target["cmd"], args.cpu, logdir, cwd=target["cwd"], env=target["env"])
    try:
        end = started + deadline
        while True:
            if service.proc.poll() is not None:
                raise procs.ServiceError(f"{name} exited with code {service.proc.returncode}:\n{service.tail()}")
            try:
                status = procs.http_status(target["port"], target["path"], timeout=1.0)
                if status == 200 or target["any_status"]:
                    break
            except OSError:
                pass
            if time.perf_counter() > end:
                raise procs.ServiceError(f"{name} not ready after {deadline:g} s:\n{service.tail()}")
            time.sleep(0.002)
        ready = time.perf_counter() - started
        cpu = cpu_seconds(service.proc.pid)
        time.sleep(args.idle)
        memory = rss_kib(service.proc.pid)
    finally:
        procs.stop(service)
    return {"ready_s": ready, "cpu_s": cpu, "rss_kib": memory["VmRSS"], "peak_kib": memory["VmHWM"]}


def targets(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    """Every process to start per round: name -> command, environment, working directory, probe."""
    port, admin_port, redis_port = args.ports
    out: dict[str, dict[str, Any]] = {}
    trees = [(REPO_DIR, "")] + ([(args.baseline.resolve(), BASELINE)] if args.baseline else [])
    for variant in args.variants:
        for code, suffix in trees:
            name = variant + suffix
            conf = tmp / f"{name}.yaml"
            conf.write_text(example_config(code, variant, port, admin_port))
            out[name] = {"cmd": [args.python, "-m", "proxy", "run", "--config", str(conf)], "cwd": code,
                         "env": environment(code, variant, redis_port), "port": admin_port, "path": "/readyz",
                         "any_status": False}
    if not args.no_floor:
        cmd = [args.python, str(BENCH_DIR / "refproxy.py"), "--listen", f"127.0.0.1:{port}",
               "--upstream", f"http://127.0.0.1:{CLOSED_PORT}"]
        out["floor"] = {"cmd": cmd, "cwd": BENCH_DIR, "env": dict(os.environ), "port": port, "path": "/ready",
                        "any_status": True}
    return out


def compile_trees(args: argparse.Namespace) -> None:
    """Byte-compile each tree's package, as ``pip install`` does for the image: with PYTHONDONTWRITEBYTECODE
    set (the image and this machine set it), a source tree would otherwise be compiled at every start."""
    for code in [REPO_DIR] + ([args.baseline.resolve()] if args.baseline else []):
        if not compileall.compile_dir(code / "proxy", quiet=1):
            raise SystemExit(f"{code / 'proxy'}: does not compile")


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    compile_trees(args)
    plan = targets(args, tmp)
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    names = list(plan)
    for t in plan.values():  # warm-up: bytecode caches written, files in the page cache
        start_once("warmup", t, args, tmp)
    for n in range(args.rounds):
        order = names[n % len(names):] + names[:n % len(names)]
        for name in order:
            result = start_once(name, plan[name], args, tmp)
            raw[name].append(result)
            print(f"[round {n + 1}/{args.rounds}] {name}: ready {result['ready_s']:.3f} s "
                  f"(CPU {result['cpu_s']:.2f} s), "
                  f"RSS {result['rss_kib'] / 1024:.1f} MiB", file=sys.stderr)
    return raw


def medians(raw: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {name: {"ready_s": statistics.median(r["ready_s"] for r in runs),
                   "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                   "rss_mib": statistics.median(r["rss_kib"] for r in runs) / 1024,
                   "peak_mib": statistics.median(r["peak_kib"] for r in runs) / 1024}
            for name, runs in raw.items() if runs}


def table(summary: dict[str, dict[str, float]], markdown: bool) -> str:
    """One row per target; with a baseline, each variant's ratio this tree / baseline (same run)."""
    rows = [("target", "ready (s)", "CPU to ready (s)", "idle RSS (MiB)", "peak RSS (MiB)", "ready vs baseline",
             "CPU vs baseline", "RSS vs baseline")]
    for name, m in summary.items():
        base = summary.get(name + BASELINE)
        ratios = [f"{m[k] / base[k]:.2f}x" if base else "" for k in ("ready_s", "cpu_s", "rss_mib")]
        rows.append((name, f"{m['ready_s']:.3f}", f"{m['cpu_s']:.2f}", f"{m['rss_mib']:.1f}", f"{m['peak_mib']:.1f}",
                     *ratios))
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main() -> int:
    args = parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {c for c in os.sched_getaffinity(0) if c != args.cpu} or {args.cpu})
    busy = [p for p in args.ports if procs.port_in_use(p)]
    if busy:
        sys.exit(f"ports in use on 127.0.0.1: {busy} (pick another --port)")
    redis = None
    with tempfile.TemporaryDirectory(prefix="proxy-startup-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            if "full" in args.variants:
                cmd = [args.redis_server, "--port", str(args.ports[2]), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no"]
                redis = procs.start("redis", cmd, args.cpu ^ 1 if (os.cpu_count() or 1) > 1 else 0, tmp, cwd=tmp)
                procs.wait_redis(redis, args.ports[2])
            loadavg = Path("/proc/loadavg").read_text().split()[0]
            raw = measure(args, tmp)
        except procs.ServiceError as exc:
            sys.exit(f"start-up bench aborted: {exc}")
        finally:
            if redis is not None:
                procs.stop(redis)
    summary = medians(raw)
    print(table(summary, args.markdown))
    print(f"\n{args.rounds} rounds, idle {args.idle:g} s, load average {loadavg} at the start", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps({"rounds": raw, "medians": summary, "loadavg": loadavg}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
