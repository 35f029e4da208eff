"""One sidecar process: load the config, serve on uvloop until a stop signal, give the exit status.

Used by ``run`` directly and by each ``--workers`` child (:mod:`proxy.runtime.workers`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from proxy.config.load import load_config
from proxy.errors import ConfigError

log = logging.getLogger("resilience_proxy")


def _loop_factory():  # type: ignore[no-untyped-def]
    """uvloop where it is installed (it is a dependency; PyPy or Windows may lack it)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


GC_YOUNG_THRESHOLD = 7_000
"""Allocations (less deallocations) of tracked objects between two young collections; Python's default
is 700. Nearly everything a request allocates is freed by reference counting as it ends, so the cyclic
collector found almost nothing to free and cost 8% of a proxied request's CPU (bench/README.md, issue 16);
at 7,000 it did not run once in 10 s of wrk -c50, and cyclic garbage still starts a collection when it
piles up. Once serving, :func:`gc.freeze` also moves what start-up made (config, modules, about 56,000
objects) out of every later collection: a full collection had to walk all of it (55 ms, under load)."""


def run_worker(config_path: str, *, reuse_port: bool = False, watch_interval: float = 0.5,
               supervisor: int | None = None, ready: Callable[[], None] | None = None) -> int:
    """Load the config and serve until a stop signal; the exit status. ``ready`` is called once both
    ports are bound (the ``--workers`` supervisor counts a worker that dies before as a failed start)."""
    # SIGHUP means "reload" once serving; until the loop's handler is installed, it must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    from proxy.observe.exposition import file_backed_values
    from proxy.observe.logs import configure_logging
    from proxy.runtime.sidecar import serve

    file_backed_values()  # before any metric value exists
    configure_logging(config.log.level)
    gc.set_threshold(GC_YOUNG_THRESHOLD)

    def serving() -> None:
        gc.freeze()
        if ready is not None:
            ready()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, reuse_port=reuse_port, watch_interval=watch_interval or None,
                             supervisor=supervisor, ready=serving))
    except OSError as error:
        log.error("cannot start: %s", error)
        return 1
    return 0
