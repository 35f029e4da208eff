"""What an operator asks of a running sidecar before anything else: which build, and is its config the one on disk.

- ``resilience_proxy_build_info{version, python_version}`` = 1, as ``prometheus_build_info`` does,
  so ``group by (version) (...)`` shows a rollout's progress.
- ``resilience_proxy_config_last_reload_successful`` (0/1) and
  ``resilience_proxy_config_last_reload_success_timestamp_seconds``, named as Prometheus names its
  own: 1 and the load time at start, then set by every reload attempt (:class:`ConfigReloaded`). A
  refused reload leaves the old config serving while its author believes the new one runs: the
  alert ``ResilienceProxyConfigReloadFailed`` watches the 0.

Multiprocess modes (``--workers N``): ``build_info`` is ``livemax``, one series that is 1 while any
worker lives (every worker runs the same interpreter, and a per-pid ``liveall`` series would only
multiply it). Both reload gauges are ``livemin``: each worker reloads on its own, and the group is
only as current as its most behind worker; a worker that refused shows 0 even if the others took
the file, and the timestamp says since when every worker has run a config it accepted.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from functools import lru_cache

from prometheus_client import Gauge, disable_created_metrics

from proxy import __version__
from proxy.events import ConfigReloaded
from proxy.observe.metrics import PREFIX


class ProcessInfo:
    """The build gauge, and the reload gauges fed from the event bus (:meth:`on_event`)."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self.build = Gauge(
            PREFIX + "build_info",
            "Always 1; the labels say which resilience-proxy version runs on which Python.",
            ["version", "python_version"], multiprocess_mode="livemax")
        self.build.labels(__version__, platform.python_version()).set(1)
        self.reload_ok = Gauge(
            PREFIX + "config_last_reload_successful",
            "1 when the last config reload was applied (or none was tried since start), 0 when it was refused "
            "and an older config still serves.",
            multiprocess_mode="livemin")
        self.reload_at = Gauge(
            PREFIX + "config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that was applied (the start counts).",
            multiprocess_mode="livemin")

    def loaded(self, at: float) -> None:
        """A config was applied at ``at`` (start, or a reload)."""
        self.reload_ok.set(1)
        self.reload_at.set(at)

    EVENTS = (ConfigReloaded,)
    """The events :meth:`on_event` reads (the bus hands it no other)."""

    def on_event(self, event: object) -> None:
        """The bus listener: reload results only."""
        if isinstance(event, ConfigReloaded):
            if event.result == "ok":
                self.loaded(self._now())
            else:
                self.reload_ok.set(0)


@lru_cache(maxsize=1)
def process_info() -> ProcessInfo:
    """Registered once per process (no ``_created`` series, as every family here)."""
    disable_created_metrics()
    return ProcessInfo()
