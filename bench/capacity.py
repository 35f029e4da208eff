"""What one Redis carries: ``redis-benchmark`` running the sidecar's own rate-limit script.

Each proxied request with rate limits costs one EVALSHA of ``lua/ratelimit.lua`` (three keys under
one hash tag, three GETs and three SETs inside Redis), the call that dominates the fleet's Redis
load (bench/fleet.py measures how many per request). Every call passes and writes its keys, as a
fleet under its limits does. One call in flight per connection (``-P 1``: a pod at a modest rate)
and 16 (``-P 16``: a busy pod's pipelined lane); Redis and redis-benchmark on separate cores.
"""

from __future__ import annotations

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


def benchmark_command(port: int, sha: str, requests: int, pipeline: int, now_us: int) -> list[str]:
    """redis-benchmark, 50 connections, EVALSHA of the script over :data:`KEYS`: 1 us apart with 10^12 us
    of tolerance, so every call passes and writes its three keys."""
    argv = [str(now_us), *["1", str(10**12), "1"] * len(KEYS)]
    return ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests), "-P", str(pipeline), "--csv",
            "EVALSHA", sha, str(len(KEYS)), *KEYS, *argv]


def evalsha_capacity(redis_server: str, port: int, redis_cpu: int, client_cpu: int, requests: int,
                     tmp: Path) -> dict[str, Any]:
    """EVALSHA/s at -P 1 and -P 16 on a fresh Redis, and Redis's own microseconds per call."""
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    service = procs.start("redis-capacity", cmd, redis_cpu, tmp, cwd=tmp)
    try:
        procs.wait_redis(service, port)
        sha = redisstats.command(port, "SCRIPT", "LOAD", SCRIPT.read_text()).decode()
        out: dict[str, Any] = {"script": SCRIPT.name, "requests": requests}
        for pipeline in (1, 16):
            done = subprocess.run(procs.pinned(client_cpu, benchmark_command(port, sha, requests, pipeline,
                                                                             time.time_ns() // 1000)),
                                  capture_output=True, text=True, timeout=120, check=True)
            out[f"evalsha_per_s_P{pipeline}"] = fleet_report.benchmark_rps(done.stdout)
        evalsha = redisstats.commandstats_fields(port).get("evalsha", {})
        out["usec_per_evalsha"] = evalsha.get("usec_per_call")
        out["evalsha_failed"] = int(evalsha.get("failed_calls", 0))
        return out
    except (procs.ServiceError, subprocess.SubprocessError, OSError, ValueError, RuntimeError) as error:
        return {"error": str(error)}
    finally:
        procs.stop(service)


def redis_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"v=(\S+)", out)
    return match.group(1) if match else "?"
