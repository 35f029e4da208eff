"""Run the two load generators as pinned subprocesses and parse what they print.

Both run in their own process so that the runner's Python never competes with them for the GIL,
and both are bounded in time: wrk by -d, openloop by --duration, each with a subprocess timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from procs import pinned

BENCH_DIR = Path(__file__).resolve().parent

_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_TOTAL = re.compile(r"(\d+) requests in")

# Sent by both generators to every target alike, so the rate-limit variant's org and ip keys are real
# keys (not the shared bucket of requests without one). nginx ignores them, the reference proxy passes
# them on, and the sidecar never sends either upstream (they are its org and client IP headers).
# 203.0.113.7 is a documentation address (TEST-NET-3).
HEADERS = (("X-Org-Id", "bench-org"), ("X-Forwarded-For", "203.0.113.7"))


def wrk(url: str, seconds: float, connections: int, cpu: int) -> dict[str, float]:
    """Closed-loop throughput: one wrk thread keeping `connections` requests in flight."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "2s"]
    cmd += [arg for name, value in HEADERS for arg in ("-H", f"{name}: {value}")] + [url]
    out = subprocess.run(pinned(cpu, cmd), capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = _RPS.search(out)
    if rps is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    non_2xx = _NON_2XX.search(out)
    sock = _SOCKET_ERRORS.search(out)
    total = _TOTAL.search(out)
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in sock.groups()) if sock else 0,
    }


def openloop(
    url: str, rate: float, seconds: float, warmup: float, cpu: int, python: str = sys.executable
) -> dict[str, object]:
    """Fixed-rate latency run (see openloop.py); returns its JSON result."""
    cmd = [python, str(BENCH_DIR / "openloop.py"), url, "--rate", str(rate), "--duration", str(seconds)]
    cmd += ["--warmup", str(warmup), "--json"]
    cmd += [arg for name, value in HEADERS for arg in ("--header", f"{name}: {value}")]
    proc = subprocess.run(pinned(cpu, cmd), capture_output=True, text=True, timeout=warmup + seconds + 30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openloop failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
