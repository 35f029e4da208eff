"""``python bench/profiled.py STATS ARGS...``: the sidecar (``python -m proxy ARGS...``) with cProfile
switched on by SIGUSR1 and off by SIGUSR2, which writes STATS: only the loaded window is profiled,
not start-up. bench/hotspots.py drives it.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType


def main() -> int:
    stats, args = sys.argv[1], sys.argv[2:]
    profiler = cProfile.Profile()

    def start(_signum: int, _frame: FrameType | None) -> None:
        profiler.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(stats)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["proxy", *args]
    from proxy.cli import main as proxy_main

    return proxy_main()


if __name__ == "__main__":
    sys.exit(main())
