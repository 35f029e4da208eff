"""What one Redis carries: ``redis-benchmark`` running the sidecar's own rate-limit script.

On one Redis each proxied request with three rate limits costs one EVALSHA of ``lua/ratelimit.lua``
over three keys under the upstream's hash tag (three GETs and three SETs inside Redis); on a cluster,
one EVALSHA per limit key, each over one key. That call dominates the fleet's Redis load
(bench/fleet.py measures how many per request). Every call passes and writes its keys, as a fleet
under its limits does. Three keys with one call in flight per connection (``-P 1``: a pod at a
modest rate) and 16 (``-P 16``: a busy pod's pipelined lane), and one key at ``-P 1`` (a cluster's
call); Redis and redis-benchmark on separate cores.

Calls per second depend on what else the machine runs, and so, less, does Redis's own CPU time per
call (user + system, from ``/proc/PID/stat``, network I/O and parsing included: a crowded VM makes
every call slower). ``..._per_cpu_s`` is the rate one core given wholly to Redis would sustain here,
the figure the model in bench/README.md uses; a PING (``evalsha0_...``) measured the same way in
the same run is the yardstick: a call's cost in PINGs hardly depends on the machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import fleet_report
import procs
import redisstats

SCRIPT = Path(__file__).resolve().parent.parent / "proxy" / "state" / "redis" / "lua" / "ratelimit.lua"
KEYS = tuple(f"rp:{{rl:bench}}:{name}" for name in ("per-org:bench-org", "per-ip:203.0.113.7", "account:-"))
RUNS = ((0, 1), (3, 1), (3, 16), (1, 1))
"""(keys per call, calls in flight per connection) of each measurement; 0 keys: PING, the yardstick."""


def benchmark_command(port: int, sha: str, requests: int, pipeline: int, now_us: int, keys: int = 3) -> list[str]:
    """redis-benchmark, 50 connections, EVALSHA of the script over the first ``keys`` of :data:`KEYS`: 1 us
    apart with 10^12 us of tolerance, so every call passes and writes its keys. ``keys=0``: PING."""
    argv = [str(now_us), *["1", str(10**12), "1"] * keys]
    call = ["EVALSHA", sha, str(keys), *KEYS[:keys], *argv] if keys else ["PING"]
    return ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests), "-P", str(pipeline), "--csv",
            *call]


def evalsha_capacity(redis_server: str, port: int, redis_cpu: int, client_cpu: int, requests: int,
                     tmp: Path) -> dict[str, Any]:
    """EVALSHA/s of each of :data:`RUNS` on a fresh Redis (``evalsha3_per_s_P1`` ...), and Redis's own
    microseconds per call over all of them."""
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    service = procs.start("redis-capacity", cmd, redis_cpu, tmp, cwd=tmp)
    try:
        procs.wait_redis(service, port)
        sha = redisstats.command(port, "SCRIPT", "LOAD", SCRIPT.read_text()).decode()
        out: dict[str, Any] = {"script": SCRIPT.name, "requests": requests}
        for keys, pipeline in RUNS:
            cmd = benchmark_command(port, sha, requests, pipeline, time.time_ns() // 1000, keys)
            used = cpu_seconds(service.proc.pid)
            done = subprocess.run(procs.pinned(client_cpu, cmd), capture_output=True, text=True, timeout=120,
                                  check=True)
            used = cpu_seconds(service.proc.pid) - used
            out[f"evalsha{keys}_per_s_P{pipeline}"] = fleet_report.benchmark_rps(done.stdout)
            out[f"evalsha{keys}_per_cpu_s_P{pipeline}"] = round(requests / used) if used > 0 else None
        evalsha = redisstats.commandstats_fields(port).get("evalsha", {})
        out["usec_per_evalsha"] = evalsha.get("usec_per_call")
        out["evalsha_failed"] = int(evalsha.get("failed_calls", 0))
        return out
    except (procs.ServiceError, subprocess.SubprocessError, OSError, ValueError, RuntimeError) as error:
        return {"error": str(error)}
    finally:
        procs.stop(service)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else "?"
