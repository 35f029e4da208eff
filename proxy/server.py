"""One sidecar process: data and admin listeners, signals, and the graceful drain.

On SIGTERM or SIGINT: ``/readyz`` turns 503, the data listener closes (new connections are
refused), in-flight requests get up to ``shutdown_grace`` to finish, then the process exits.
The admin listener stays up until the drain ends so that orchestrators can watch it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from aiohttp import web

from proxy.config.model import Address, Config, StateSettings
from proxy.events import BackendChanged, EventBus
from proxy.observe.access import AccessLog
from proxy.observe.alerts import SlackAlerts
from proxy.observe.errors import SentryReporter
from proxy.observe.gauges import Sampler
from proxy.observe.logs import log_breaker_transition
from proxy.observe.metrics import proxy_metrics
from proxy.state.base import BreakerStore, LimitStore
from proxy.state.memory import MemoryBreakerStore
from proxy.state.memory_limits import MemoryLimitStore
from proxy.web.admin import Health, admin_app
from proxy.web.dataplane import DataPlane

log = logging.getLogger("resilience_proxy")
# Well above the idle reuse window of the SDKs' HTTP clients, so that a client never sends a
# request on a connection the sidecar is just closing (facts.md: a dropped POST may be resent).
KEEPALIVE_TIMEOUT = 75.0


class Sidecar:
    """The listeners and the data plane of one process, with an explicit start / drain / close."""

    def __init__(self, config: Config, *, reuse_port: bool = False, access_log: AccessLog | None = None,
                 breakers: BreakerStore | None = None, limits: LimitStore | None = None) -> None:
        self.config = config
        self.health = Health(backend_required=config.state.required)
        self.breakers = breakers or make_breaker_store(config.state)
        self.breakers.add_listener(log_breaker_transition)
        self.limits = limits or make_limit_store(config.state)
        self.events = EventBus()
        self.events.subscribe(proxy_metrics().on_event)
        self.breakers.add_listener(self.events.emit)
        self.alerts = SlackAlerts(config.slack, self.events.emit) if config.slack else None
        self.errors = SentryReporter(config.sentry) if config.sentry else None
        for reporter in (self.alerts, self.errors):
            if reporter is not None:
                self.events.subscribe(reporter.on_event)
        self.dataplane = DataPlane(config, self.events, access_log or AccessLog(enabled=config.log.access),
                                   self.breakers, self.limits)
        self.sampler = Sampler(config, self.breakers, self.limits, lambda: self.dataplane.in_flight)
        self._reuse_port = reuse_port
        self._data = web.ServerRunner(
            web.Server(self.dataplane.handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT),
            handle_signals=False,
            shutdown_timeout=config.shutdown_grace,
        )
        self._admin = web.AppRunner(admin_app(self.health, config, self.breakers, self.sampler.sample),
                                    access_log=None, handle_signals=False, shutdown_timeout=1.0)
        self._watch: asyncio.Task[None] | None = None
        self.data_address: Address | None = None
        self.admin_address: Address | None = None

    async def start(self) -> None:
        """Bind both listeners (port 0 picks a free port) and start serving."""
        for reporter in (self.errors, self.alerts):
            if reporter is not None:
                await reporter.start()
        await self.breakers.start()
        await self.limits.start()
        self._watch = asyncio.create_task(self._watch_backend())
        self.admin_address = await self._bind(self._admin, self.config.admin.listen)
        self.data_address = await self._bind(self._data, self.config.listen)
        self.health.serving = True
        log.info("serving", extra={"listen": str(self.data_address), "admin": str(self.admin_address),
                                   "upstreams": [f"{u.prefix} -> {u.url}" for u in self.config.upstreams]})

    async def _bind(self, runner: web.BaseRunner, address: Address) -> Address:
        await runner.setup()
        site = web.TCPSite(runner, address.host, address.port, reuse_port=self._reuse_port, backlog=1024)
        await site.start()
        host, port = runner.addresses[-1][:2]
        return Address(host, port)

    async def _watch_backend(self, interval: float = 0.5) -> None:
        """Mirror the state backend's health into readiness and a log line per change; sample the gauges
        (breaker views that other replicas move, backend health, Redis errors, in-flight requests)."""
        while True:
            up = self.breakers.backend_up and self.limits.backend_up
            if up != self.health.backend_up:
                (log.info if up else log.error)("state backend %s", "up" if up else "down",
                                                extra={"backend": self.config.state.backend})
                self.events.emit(BackendChanged(self.config.state.backend, up, time.time()))
            self.health.backend_up = up
            self.sampler.sample()
            await asyncio.sleep(interval)

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace), then stop the data plane."""
        self.health.draining = True
        log.info("draining", extra={"in_flight": self.dataplane.in_flight, "grace_s": self.config.shutdown_grace})
        await self._data.cleanup()
        log.info("drained", extra={"in_flight": self.dataplane.in_flight})

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self._data.cleanup()
        await self.dataplane.close()
        await self.breakers.close()
        await self.limits.close()
        await self._admin.cleanup()
        for reporter in (self.alerts, self.errors):
            if reporter is not None:
                await reporter.close()


def make_breaker_store(state: StateSettings) -> BreakerStore:
    """The configured backend: embedded memory, or Redis shared by the fleet."""
    if state.backend == "redis":
        from proxy.state.redis import RedisBreakerStore

        return RedisBreakerStore(state.redis_url, prefix=state.key_prefix, timeout=state.redis_timeout)
    return MemoryBreakerStore()


def make_limit_store(state: StateSettings) -> LimitStore:
    """Rate-limit buckets in the configured backend: this process, or Redis for the whole fleet."""
    if state.backend == "redis":
        from proxy.state.redis_limits import RedisLimitStore

        return RedisLimitStore(state.redis_url, prefix=state.key_prefix, timeout=state.redis_timeout)
    return MemoryLimitStore()


async def serve(config: Config, *, reuse_port: bool = False) -> None:
    """Serve ``config`` until SIGTERM or SIGINT, then drain and return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sidecar = Sidecar(config, reuse_port=reuse_port)
    try:
        await sidecar.start()
        await stop.wait()
        await sidecar.drain()
    finally:
        await sidecar.close()
