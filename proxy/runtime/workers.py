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
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType

from proxy.runtime.process import run_worker
from proxy.runtime.restarts import RULE, RestartRule, WorkerSlot

log = logging.getLogger("resilience_proxy")
TICK = 0.1
"""Seconds between the supervisor's looks at its workers and signals."""
KILL_AFTER = 2.0
"""After a second stop signal, how long workers get to exit before they are killed."""
_PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when its parent dies."""


def _worker_main(config_path: str, watch_interval: float, supervisor: int, ready: Event) -> None:
    _leave_terminal_group(supervisor)
    try:
        status = run_worker(config_path, reuse_port=True, watch_interval=watch_interval, supervisor=supervisor,
                            ready=ready.set)
    except KeyboardInterrupt:  # SIGINT (Ctrl-C reaches the whole group) before the event loop handles it
        status = 128 + signal.SIGINT
    raise SystemExit(status)


def _leave_terminal_group(supervisor: int) -> None:
    """Stop signals reach a worker once, from the supervisor: never also from the terminal.

    Ctrl-C sends SIGINT to the terminal's whole foreground process group. Were the workers in the
    supervisor's group, each would get it twice (the terminal's, then the supervisor's forward),
    take the second for "exit now" and skip the drain. In a group of its own a worker hears only
    the supervisor; and so that a killed supervisor (SIGKILL, OOM) leaves no worker behind holding
    the port, the kernel sends the worker SIGTERM (a drain) when its parent dies (Linux).
    """
    os.setpgid(0, 0)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own exit paths still stop workers
        return
    if os.getppid() != supervisor:  # it died before prctl took effect: nothing to serve for
        raise SystemExit(0)


class _Worker:
    """A worker slot: its process (None while it waits to be restarted), its ready flag, its restart count."""

    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot
        self.process: BaseProcess | None = None
        self.ready: Event | None = None
        self.restart_at = 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


def supervise(config_path: str, workers: int, watch_interval: float = 0.5, rule: RestartRule = RULE) -> int:
    """Run ``workers`` processes until SIGTERM/SIGINT; forward the signal, wait for their drain.

    SIGHUP is forwarded to every live worker, each of which reloads its config (a worker sends it
    here after ``POST /admin/reload``, so that all follow the one that answered). A worker that dies
    on its own is replaced after a growing delay; one that keeps dying before it became ready makes
    the supervisor stop (:mod:`proxy.runtime.restarts`). A second SIGTERM/SIGINT during the drain is
    passed on (each worker then exits at once) and ends the supervisor within ``KILL_AFTER``.
    Exit status 0 when every worker drained cleanly, 1 when workers failed or kept dying, 128 + the
    signal's number when a second signal cut the drain short.
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

    def start(worker: _Worker) -> None:
        worker.ready = context.Event()
        worker.process = context.Process(target=_worker_main, name="resilience-proxy-worker",
                                         args=(config_path, watch_interval, os.getpid(), worker.ready))
        # An ignored signal stays ignored across exec, so a SIGHUP that reaches a worker before its
        # event loop handles it does not kill it (the default action); the worker's loop takes over.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            worker.process.start()
        finally:
            signal.signal(signal.SIGHUP, on_hangup)
        worker.slot.started(time.monotonic())

    pool = [_Worker(WorkerSlot(rule)) for _ in range(workers)]
    for worker in pool:
        start(worker)
    log.info("workers started", extra={"workers": workers, "pids": [w.process.pid for w in pool if w.process]})
    status = 0
    try:
        while not stopping and not status:
            time.sleep(TICK)
            if hangups:
                hangups.clear()
                pids = [w.process.pid for w in pool if w.alive and w.process and w.process.pid]
                log.info("reloading workers", extra={"pids": pids})
                for pid in pids:
                    os.kill(pid, signal.SIGHUP)
            status = _tend(pool, start, stopping)
        if stopping:
            status = _stop(pool, stopping) or status
        return status
    finally:
        for worker in pool:
            if worker.alive and worker.process:
                worker.process.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _tend(pool: list[_Worker], start: Callable[[_Worker], None], stopping: list[int]) -> int:
    """Note ready workers, schedule the restart of dead ones, start those due; 1 when it is time to give up."""
    now = time.monotonic()
    for index, worker in enumerate(pool):
        process = worker.process
        if process is None:
            if now >= worker.restart_at and not stopping:
                start(worker)
            continue
        if worker.ready is not None and worker.ready.is_set():
            worker.slot.ready(now)
        if process.is_alive() or stopping:
            continue
        _mark_dead(process.pid)
        worker.process = None
        delay = worker.slot.died(now)
        context = {"worker": index, "worker_pid": process.pid, "exitcode": process.exitcode}
        if delay is None:
            log.error("worker died before it became ready %d times in a row; stopping",
                      worker.slot.unready_deaths, extra=context)
            for other in pool:
                if other.alive and other.process and other.process.pid:
                    os.kill(other.process.pid, signal.SIGTERM)
            _join(pool, stopping)
            return 1
        log.error("worker exited; replacing it in %.1fs", delay, extra=context)
        worker.restart_at = now + delay
    return 0


def _stop(pool: list[_Worker], stopping: list[int]) -> int:
    """Forward the stop signal and wait for the drain; the exit status."""
    for worker in pool:
        if worker.alive and worker.process and worker.process.pid:
            os.kill(worker.process.pid, stopping[0])
    forced = _join(pool, stopping)
    if forced:
        return 128 + forced
    return 0 if all(_stopped_cleanly(w, stopping[0]) for w in pool) else 1


def _stopped_cleanly(worker: _Worker, signum: int) -> bool:
    """Exit 0, or ended by the stop signal itself before it ever served (a worker still importing has
    no handler yet and nothing to drain: the signal's default action or KeyboardInterrupt ends it)."""
    code = 0 if worker.process is None else worker.process.exitcode
    if code == 0:
        return True
    started_serving = worker.ready is not None and worker.ready.is_set()
    return not started_serving and code in (-signum, 128 + signum)


def _join(pool: list[_Worker], stopping: list[int]) -> int:
    """Wait for every worker to exit. A second stop signal is passed on, and workers still alive
    ``KILL_AFTER`` later are killed; its number is returned (0 when none came)."""
    forced, kill_at = 0, 0.0
    while any(w.alive for w in pool):
        if len(stopping) >= 2 and not forced:
            forced, kill_at = stopping[1], time.monotonic() + KILL_AFTER
            log.warning("second %s: workers exit now", signal.Signals(forced).name)
            for worker in pool:
                if worker.alive and worker.process and worker.process.pid:
                    os.kill(worker.process.pid, forced)
        if forced and time.monotonic() >= kill_at:
            for worker in pool:
                if worker.alive and worker.process:
                    worker.process.kill()
        time.sleep(TICK / 2)
    for worker in pool:
        if worker.process is not None:
            worker.process.join()
    return forced


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
