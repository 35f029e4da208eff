"""--workers' file-backed metric values with the pid kept in memory: each process still writes its own
file, a forked child included, and a scrape adds them up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

SCRIPT = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from proxy.observe.exposition import file_backed_values
file_backed_values()
from prometheus_client import Counter
hits = Counter("hits", "Hits.")
hits.inc()
child = os.fork()
if child == 0:
    hits.inc(10)
    os._exit(0)
os.waitpid(child, 0)
hits.inc()
print(os.getpid(), child)
"""


def test_each_process_writes_its_own_file_and_a_scrape_adds_them_up(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True)
    parent, child = done.stdout.split()
    assert sorted(p.name for p in tmp_path.glob("counter_*.db")) == sorted([f"counter_{parent}.db",
                                                                            f"counter_{child}.db"])
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("hits_total") == 12
