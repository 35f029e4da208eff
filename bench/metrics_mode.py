"""What one metric update costs in each prometheus-client mode, in fresh interpreters, interleaved.

    python bench/metrics_mode.py [--rounds 5] [--updates 200000]

In-memory values (one process) against file-backed ones (``PROMETHEUS_MULTIPROC_DIR`` set: an mmap'd
file per process and metric type, written under a lock). Each round times a labelled counter's
``inc()`` and a histogram's ``observe()`` (the two updates the sidecar makes per request) once in each
mode, each in its own interpreter pinned to one core; the medians are printed with their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import sys, time
from prometheus_client import Counter, Histogram
n = int(sys.argv[1])
counter = Counter("c", "c", ["upstream", "route"]).labels("api", "default")
histogram = Histogram("h", "h", ["upstream"]).labels("api")
start = time.perf_counter()
for _ in range(n):
    counter.inc()
end = time.perf_counter()
for _ in range(n):
    histogram.observe(0.01)
print((end - start) / n * 1e9, (time.perf_counter() - end) / n * 1e9)
"""


def one(updates: int, directory: str | None, cpu: int) -> tuple[float, float]:
    """(ns per counter inc, ns per histogram observe) in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    if directory:
        env["PROMETHEUS_MULTIPROC_DIR"] = directory
    out = subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c", CHILD, str(updates)], env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout.split()
    return float(out[0]), float(out[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--cpu", type=int, default=0)
    args = parser.parse_args()
    if not (1 <= args.rounds <= 50 and 1 <= args.updates <= 5_000_000):
        parser.error("rounds 1-50, updates 1-5,000,000")
    memory: list[tuple[float, float]] = []
    files: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        memory.append(one(args.updates, None, args.cpu))
        with tempfile.TemporaryDirectory(prefix="metrics-mode-") as directory:
            files.append(one(args.updates, directory, args.cpu))
    print(f"median of {args.rounds} interleaved rounds, {args.updates:,} updates each (ns per update)")
    for index, name in enumerate(("counter inc", "histogram observe")):
        mem = statistics.median(r[index] for r in memory)
        fil = statistics.median(r[index] for r in files)
        print(f"  {name:<18} in memory {mem:7.0f}   file-backed {fil:7.0f}   {fil / mem:4.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
