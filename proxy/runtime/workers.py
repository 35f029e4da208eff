"""``--workers N``: N sidecar processes sharing one port through SO_REUSEPORT.

The supervisor only starts, watches and stops workers; it never serves. Each worker is a
fresh interpreter (spawned, not forked, so no event loop or socket leaks across), binds the
data and admin ports with SO_REUSEPORT, and writes its metrics under a directory the supervisor
creates for this run (``PROMETHEUS_MULTIPROC_DIR`` for the workers) so that whichever worker answers
``/metrics`` reports the totals. An inherited ``PROMETHEUS_MULTIPROC_DIR`` only says where to create
it: a fresh directory per run holds no files of an earlier run's workers (an emptyDir outlives a
container restart), and it is removed at exit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from proxy.runtime.process import run_worker

log = logging.getLogger("resilience_proxy")
RESTART_DELAY = 1.0


def _worker_main(config_path: str, watch_interval: float, supervisor: int) -> None:
    raise SystemExit(run_worker(config_path, reuse_port=True, watch_interval=watch_interval, supervisor=supervisor))


def supervise(config_path: str, workers: int, watch_interval: float = 0.5) -> int:
    """Run ``workers`` processes until SIGTERM/SIGINT; forward the signal, wait for their drain.

    SIGHUP is forwarded to every live worker, each of which reloads its config (a worker sends it
    here after ``POST /admin/reload``, so that all follow the one that answered). A worker that dies
    on its own is replaced. Exit status 0 when every worker drained cleanly.
    """
    parent = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        metrics_dir = tempfile.mkdtemp(prefix="resilience-proxy-metrics-", dir=parent)
    except OSError as error:  # a read-only root without a writable /tmp, say
        log.error("cannot create the workers' metrics directory: %s", error,
                  extra={"PROMETHEUS_MULTIPROC_DIR": parent})
        return 1
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []
    hangups: list[int] = []

    def on_signal(signum: int, _: FrameType | None) -> None:
        stopping.append(signum)

    def on_hangup(signum: int, _: FrameType | None) -> None:
        hangups.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)

    def start() -> BaseProcess:
        process = context.Process(target=_worker_main, args=(config_path, watch_interval, os.getpid()),
                                  name="resilience-proxy-worker")
        # An ignored signal stays ignored across exec, so a SIGHUP that reaches a worker before its
        # event loop handles it does not kill it (the default action); the worker's loop takes over.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGHUP, on_hangup)
        return process

    running = [start() for _ in range(workers)]
    log.info("workers started", extra={"workers": workers, "pids": [p.pid for p in running]})
    status = 0
    try:
        while not stopping:
            time.sleep(0.2)
            if hangups:
                hangups.clear()
                pids = [p.pid for p in running if p.is_alive() and p.pid]
                log.info("reloading workers", extra={"pids": pids})
                for pid in pids:
                    os.kill(pid, signal.SIGHUP)
            for index, process in enumerate(running):
                if not process.is_alive() and not stopping:
                    log.error("worker exited; replacing it", extra={"pid": process.pid, "exitcode": process.exitcode})
                    _mark_dead(process.pid)
                    time.sleep(RESTART_DELAY)
                    running[index] = start()
        for process in running:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGTERM)
        for process in running:
            process.join()
            if process.exitcode != 0:
                status = 1
        return status
    finally:
        for process in running:
            if process.is_alive():
                process.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
