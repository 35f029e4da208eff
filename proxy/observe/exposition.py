"""The ``/metrics`` text for one process, or for every worker of ``--workers N``.

With ``--workers N`` every worker writes its samples to files under ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode) and whichever worker answers ``/metrics`` merges all of
them, so a scrape sees the totals of the whole process group.

prometheus-client's process collector reads ``/proc/self`` only, and its multiprocess mode exposes
no process metrics at all: the answering worker's own numbers would jump from worker to worker
between scrapes (a CPU counter going backwards). :class:`WorkerProcesses` instead sums the
``process_*`` metrics over the live workers, found by the live-gauge files they keep in that
directory, so memory, CPU and file descriptors describe the sidecar as a whole.

In that mode prometheus-client asks the kernel for the pid on every update (to notice a fork): six
``getpid`` system calls per request. :func:`file_backed_values` gives it the pid from memory instead,
read again after a fork.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")
_SUMMED = ("virtual_memory_bytes", "resident_memory_bytes", "cpu_seconds_total", "open_fds")
"""Summed over the workers; the start time is the oldest worker's, max_fds the lowest limit."""


_pid = os.getpid()


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


def _process_pid() -> int:
    return _pid


def file_backed_values() -> None:
    """With ``PROMETHEUS_MULTIPROC_DIR`` set (``--workers``), make prometheus-client's file-backed values
    take the pid from memory (kept right across a fork) rather than from a system call per update.

    Call it before the first metric value exists: values made before and after would write the same
    file through two separate maps."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.register_at_fork(after_in_child=_remember_pid)
        values.ValueClass = values.MultiProcessValue(process_identifier=_process_pid)


class WorkerProcesses:
    """``process_*`` of every live worker, added up (a collector for the multiprocess registry)."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def pids(self) -> list[int]:
        """Workers that have live-gauge files (each writes some at start) and are still running."""
        found = set()
        for path in glob.glob(os.path.join(self._directory, "gauge_live*.db")):
            match = _LIVE_FILE.search(os.path.basename(path))
            if match and os.path.exists(f"/proc/{match.group(1)}"):
                found.add(int(match.group(1)))
        return sorted(found)

    def collect(self) -> Iterable[Metric]:
        pids = self.pids()
        values: dict[str, list[float]] = {}
        for pid in pids:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                for sample in family.samples:
                    values.setdefault(sample.name.removeprefix("process_"), []).append(sample.value)
        if not values:
            return []
        workers = " Summed over the live workers."
        families: list[Metric] = []
        for name in _SUMMED:
            if name in values:
                kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
                families.append(kind(f"process_{name.removesuffix('_total')}", _HELP[name] + workers,
                                     value=sum(values[name])))
        if "start_time_seconds" in values:
            families.append(GaugeMetricFamily("process_start_time_seconds", _HELP["start_time_seconds"],
                                              value=min(values["start_time_seconds"])))
        if "max_fds" in values:
            families.append(GaugeMetricFamily("process_max_fds", _HELP["max_fds"], value=min(values["max_fds"])))
        return families


_HELP = {
    "virtual_memory_bytes": "Virtual memory size in bytes.",
    "resident_memory_bytes": "Resident memory size in bytes.",
    "cpu_seconds_total": "Total user and system CPU time spent in seconds.",
    "open_fds": "Number of open file descriptors.",
    "start_time_seconds": "Start time of the oldest live worker since unix epoch in seconds.",
    "max_fds": "Maximum number of open file descriptors (the lowest limit of the workers).",
}


def exposition() -> tuple[bytes, str]:
    """The text exposition for ``/metrics``: every worker's samples in multiprocess mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        registry.register(WorkerProcesses(directory))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
