"""One sidecar process, and the composition root: what it is made of, started in order, closed in reverse.

Every resource (Sentry, Slack, the stores, the limiter, the access log, the listeners, the data
planes, the background tasks) is entered into one :class:`contextlib.AsyncExitStack` as it
starts; :meth:`Sidecar.close` closes the stack, so each stops after whatever started after it
and nothing that never started is closed. A new component is one line in :meth:`Sidecar.start`:
``await self._enter(component)`` (anything with ``start()`` and ``close()``), or
``await self._listen(runner, address)`` for a listener.

On SIGTERM or SIGINT: ``/readyz`` turns 503, the data listener closes (new connections are
refused), in-flight requests get up to ``shutdown_grace`` to finish, then the process exits.
The admin listener stays up until the drain ends so that orchestrators can watch it.

On SIGHUP, ``POST /admin/reload`` or a change of the config files (:mod:`proxy.config.running`), the
config is loaded again; a valid one gets a new :class:`DataPlane`, swapped in by one assignment,
so each request runs wholly on one generation. The replaced one finishes its requests, then
closes its connection pools. The breaker and limit stores are the same objects before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from aiohttp import web

from proxy.clock import SystemClock
from proxy.config.load import load_config
from proxy.config.model import Address, Config
from proxy.config.running import (
    ChangeDetector,
    ReloadAttempt,
    RunningConfig,
    fingerprint,
    restart_only_changes,
    summarize,
    watched_files,
)
from proxy.errors import ConfigError, Problem
from proxy.events import BackendChanged, ConfigReloaded, EventBus
from proxy.guard import Guard
from proxy.limiter import Limiter
from proxy.observe.access import AccessLog
from proxy.observe.gauges import Sampler
from proxy.observe.logs import EVENTS as LOGGED_EVENTS
from proxy.observe.logs import on_event as log_events
from proxy.observe.metrics import proxy_metrics
from proxy.observe.process_info import process_info
from proxy.observe.status import StatusFeed
from proxy.observe.webhook_metrics import WebhookSampler
from proxy.state.stores import Stores, open_stores, webhook_store
from proxy.web.admin.app import Health, admin_app
from proxy.web.admin.status import StatusService
from proxy.web.dataplane import DataPlane

if TYPE_CHECKING:
    from proxy.observe.alerts.slack import SlackAlerts
    from proxy.observe.sentry import SentryReporter
    from proxy.runtime.delivery import DeliveryWorkers
    from proxy.web.webhooks import WebhookListener

log = logging.getLogger("resilience_proxy")
# Well above the idle reuse window of the SDKs' HTTP clients, so that a client never sends a
# request on a connection the sidecar is just closing (facts.md: a dropped POST may be resent).
KEEPALIVE_TIMEOUT = 75.0


class Component(Protocol):
    """What the sidecar starts and, in reverse order, closes."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Sidecar:
    """The listeners and the data plane of one process, with an explicit start / drain / close."""

    def __init__(self, config: Config, *, reuse_port: bool = False, access_log: AccessLog | None = None,
                 stores: Stores | None = None, watch_interval: float | None = 0.5,
                 tell_workers: Callable[[], None] | None = None) -> None:
        """Build every part, without I/O; :meth:`start` starts them.

        ``stores``: the breaker and limit stores (default: the configured backend's); the sidecar
        starts and closes them. ``watch_interval``: seconds between polls of the config files (None:
        no watching). ``tell_workers``: with ``--workers N``, asks the supervisor to reload every
        worker after an admin reload here (this one then finds its files unchanged)."""
        self._stack = contextlib.AsyncExitStack()
        self.running = RunningConfig(config, fingerprint(watched_files(config)), time.time())
        self.health = Health(backend_required=config.state.required)
        self.events = EventBus()
        self.events.subscribe(log_events, LOGGED_EVENTS)
        self.events.subscribe(proxy_metrics().on_event, proxy_metrics().events)
        self.breakers, self.limits = stores or open_stores(config.state)
        self.breakers.emit_to(self.events.emit)
        process_info().loaded(self.running.loaded_at)
        self.events.subscribe(process_info().on_event, process_info().EVENTS)
        self.alerts = slack_alerts(config, self.events.emit)
        self.sentry = sentry_reporter(config)
        for reporter in (self.alerts, self.sentry):
            if reporter is not None:
                self.events.subscribe(reporter.on_event)
        # With --workers (someone to tell), every worker writes access lines to the one stderr.
        self.access_log = access_log or AccessLog(enabled=config.log.access, shared=tell_workers is not None)
        # Kept across reloads with the stores: retry budgets, and the limiter's local-share buckets.
        self.guard = Guard(self.breakers, emit=self.events.emit)
        self.limiter = Limiter(self.limits, emit=self.events.emit)
        self.dataplane = DataPlane(config, self.events, self.access_log, self.guard, self.limiter)
        self._stack.push_async_callback(self._close_planes)  # made here, so closed even if start() never ran
        self._retired: set[DataPlane] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._closing = False
        self._changes = ChangeDetector(self.running.version)
        self._watch_interval = watch_interval
        self.sampler = Sampler(config, self.breakers, self.limits, lambda: self.in_flight)
        self._reuse_port = reuse_port
        self._data = web.ServerRunner(
            web.Server(self._handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT),
            handle_signals=False,
            shutdown_timeout=config.shutdown_grace,
        )
        self._tell_workers = tell_workers
        self.data_address: Address | None = None
        self.admin_address: Address | None = None
        # Inbound webhooks: one store for the listener, the delivery workers and the admin API (also with
        # only a listener, so that webhooks a reload adds are served); the listener on its own port.
        self.webhooks = webhook_store(config.state) if config.webhooks or config.webhooks_listen else None
        self.delivery: DeliveryWorkers | None = None
        self.webhook_listener: WebhookListener | None = None
        if self.webhooks is not None:
            # Imported only with webhooks configured (the listener and the delivery workers are unused without).
            from proxy.runtime.delivery import DeliveryWorkers
            from proxy.web.webhooks import WebhookListener

            self.delivery = DeliveryWorkers(self.webhooks, lambda: self.config.webhooks, self.events.emit)
            if config.webhooks_listen is not None:
                self.webhook_listener = WebhookListener(lambda: self.config.webhooks, self.webhooks, self.events.emit)
        self.webhooks_address: Address | None = None
        # Queue depth and oldest pending age, sampled off the request path for the gauges and the backlog alert.
        self.webhook_sampler = None if self.webhooks is None else WebhookSampler(
            lambda: [hook.name for hook in self.config.webhooks], self.webhooks, self.events.emit,
            proxy_metrics().webhooks.forget)
        # The status page's feed: the last minute per route and the transitions, from the bus.
        feed = StatusFeed(SystemClock())
        self.events.subscribe(feed.on_event, feed.events)
        self.status = StatusService(feed, lambda: self.running, self.breakers, self.limits, self.webhooks)
        self._admin = web.AppRunner(admin_app(self.health, lambda: self.running, self.breakers, self._admin_reload,
                                              lambda: self.sampler.sample(), self.webhooks, self.events.emit,
                                              self.status),
                                    access_log=None, handle_signals=False, shutdown_timeout=1.0)

    @property
    def config(self) -> Config:
        """The config running now."""
        return self.running.config

    @property
    def in_flight(self) -> int:
        """Requests not yet answered, on the current data plane and on replaced ones."""
        return self.dataplane.in_flight + sum(plane.in_flight for plane in self._retired)

    def _handle(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        # ``self.dataplane`` is read once: the request stays on that generation whatever is swapped
        # in meanwhile. aiohttp awaits the coroutine in the same expression that calls this, and
        # handle() counts the request in flight before its first await, so a replaced data plane
        # can never look idle while a request it took has yet to start. Returning the coroutine
        # rather than awaiting it spares every request a frame.
        return self.dataplane.handle(request)

    async def start(self) -> None:
        """Start every part in order, then bind both listeners (port 0 picks a free port) and serve.

        Each part is entered into the stack as it starts: :meth:`close` stops them in reverse."""
        await self._enter(self.sentry)
        await self._enter(self.alerts)
        await self._enter(self.breakers)
        await self._enter(self.limits)
        await self._enter(self.webhooks)
        await self._enter(self.delivery)
        if self.webhooks is not None and self.config.state.backend == "memory":
            log.warning("webhook events are queued in memory: events not yet delivered are lost on restart "
                        "(state.backend: redis keeps them)")
        self._stack.push_async_callback(self.limiter.close)  # its holds go to the limit store: closed first
        self._stack.callback(self.access_log.flush)
        self._mirror_backend()
        self.admin_address = await self._listen(self._admin, self.config.admin.listen)
        await self._enter(self.status)  # closed before the admin listener, so that open streams end first
        self.data_address = await self._listen(self._data, self.config.listen)
        if self.webhook_listener is not None and self.config.webhooks_listen is not None:
            await self._enter(self.webhook_listener)
            self.webhooks_address = await self._listen(self.webhook_listener.runner, self.config.webhooks_listen)
            log.info("webhooks listening", extra={"webhooks": str(self.webhooks_address),
                                                  "paths": [hook.path for hook in self.config.webhooks]})
        self._stack.push_async_callback(self._cancel_tasks)  # first to stop: no reload or sample while closing
        self._spawn(self._watch_backend())
        if self.webhook_sampler is not None:
            self._spawn(self.webhook_sampler.run())
        if self._watch_interval:
            self._spawn(self._watch_files(self._watch_interval))
        self.health.serving = True
        log.info("serving", extra={"listen": str(self.data_address), "admin": str(self.admin_address),
                                   "upstreams": [f"{u.prefix} -> {u.url}" for u in self.config.upstreams]})

    async def _enter(self, component: Component | None) -> None:
        """Start ``component`` (None: not configured) and close it with the sidecar."""
        if component is not None:
            await component.start()
            self._stack.push_async_callback(component.close)

    async def _listen(self, runner: web.BaseRunner, address: Address) -> Address:
        """Bind ``runner`` on ``address`` and close it with the sidecar; the address it got."""
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, address.host, address.port, reuse_port=self._reuse_port, backlog=1024)
        await site.start()
        host, port = runner.addresses[-1][:2]
        return Address(host, port)

    async def _watch_backend(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            self._mirror_backend()

    def _mirror_backend(self) -> None:
        """Mirror the state backend's health into readiness and a log line per change; sample the gauges
        (breaker views that other replicas move, backend health, Redis failures, in-flight requests)."""
        up = self.breakers.backend_up and self.limits.backend_up
        if up != self.health.backend_up:
            (log.info if up else log.error)("state backend %s", "up" if up else "down",
                                            extra={"backend": self.config.state.backend})
            self.events.emit(BackendChanged(self.config.state.backend, up, time.time()))
        self.health.backend_up = up
        self.sampler.sample()

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace), then stop the data plane."""
        self.health.draining = True
        self._closing = True  # no reload from here on (the admin port stays up during the drain)
        log.info("draining", extra={"in_flight": self.in_flight, "grace_s": self.config.shutdown_grace})
        if self.webhook_listener is not None:
            await self.webhook_listener.runner.cleanup()  # providers retry elsewhere; what was accepted is kept
        delivering = () if self.delivery is None else (self.delivery.drain(self.config.shutdown_grace),)
        await asyncio.gather(self._data.cleanup(), *delivering)
        log.info("drained", extra={"in_flight": self.in_flight})

    async def reload(self, trigger: str = "signal") -> ReloadAttempt:
        """Load the config files again and apply them whole, or refuse them whole and keep serving.

        ``trigger`` (``file``, ``signal``, ``admin``) is reported. Reloads run one at a time."""
        async with self._reload_lock:
            old = self.config
            before = fingerprint(watched_files(old))
            if before == self.running.version and not self._closing:
                # The same files load to the same config (the environment of a running process is
                # fixed): nothing to swap or count. A second SIGHUP, or workers told twice, cost nothing.
                attempt = ReloadAttempt(time.time(), trigger, "ok", before)
                refused_before = self.running.last_attempt is not None and self.running.last_attempt.result == "error"
                self.running.last_attempt = attempt
                self._changes.attempted(before)
                log.info("config unchanged", extra={"version": before, "trigger": trigger})
                if refused_before:  # the files are back to what runs: no longer a refused reload
                    self.events.emit(ConfigReloaded("ok", f"config {before} unchanged", trigger=trigger))
                return attempt
            new, plane, problems = await self._prepare(old)
            version = fingerprint(watched_files(new if plane is not None else old))
            # Files that changed while they were read: let the watcher look again at its next polls.
            self._changes.attempted(version if fingerprint(watched_files(old)) == before else "")
            attempt = ReloadAttempt(time.time(), trigger, "ok" if plane is not None else "error", version,
                              tuple(str(p) for p in problems))
            if plane is None:
                self.running.last_attempt = attempt
                self._refused(attempt)
            else:
                self._apply(old, new, plane, attempt)
            return attempt

    async def _admin_reload(self, trigger: str) -> ReloadAttempt:
        attempt = await self.reload(trigger)
        if attempt.result == "ok" and self._tell_workers is not None:
            self._tell_workers()
        return attempt

    async def _prepare(self, old: Config) -> tuple[Config, DataPlane | None, list[Problem]]:
        """The new config and its data plane; or no data plane, and the problems that refuse it."""
        try:
            new = await asyncio.to_thread(load_config, old.source)
        except ConfigError as error:
            return old, None, list(error.problems)
        if self._closing:  # shutting down: a new data plane would outlive close()
            return old, None, [Problem(old.source, 0, 0, "", "the sidecar is shutting down")]
        problems = restart_only_changes(old, new)
        if problems:
            return old, None, problems
        try:
            return new, DataPlane(new, self.events, self.access_log, self.guard, self.limiter,
                                  reuse=self.dataplane.clients), []
        except Exception as error:  # whatever the loader could not foresee: refuse, never crash
            return old, None, [Problem(new.source, 0, 0, "upstreams", f"cannot build the data plane: {error}")]

    def _apply(self, old: Config, new: Config, plane: DataPlane, attempt: ReloadAttempt) -> None:
        """The swap: after this assignment every new request runs on ``plane``."""
        replaced, self.dataplane = self.dataplane, plane
        self.running = RunningConfig(new, attempt.version, attempt.at, attempt)
        sampler, self.sampler = self.sampler, Sampler(new, self.breakers, self.limits, lambda: self.in_flight)
        self.sampler.forget_missing(sampler)
        self.limiter.forget_rejections()
        self.access_log.enabled = new.log.access
        if new.log.level != old.log.level:
            logging.getLogger().setLevel(new.log.level.upper())
        self._retired.add(replaced)
        self._spawn(self._retire(replaced))
        log.info("config reloaded", extra={"version": attempt.version, "trigger": attempt.trigger,
                                           **summarize(old, new), "in_flight_on_old": replaced.in_flight})
        self.events.emit(ConfigReloaded("ok", f"config {attempt.version} applied", trigger=attempt.trigger))

    def _refused(self, attempt: ReloadAttempt) -> None:
        for problem in attempt.problems:
            log.error("config reload refused: %s", problem, extra={"trigger": attempt.trigger})
        count = len(attempt.problems)
        message = (f"config reload refused ({count} problem{'s' if count != 1 else ''}); "
                   f"still running {self.running.version}")
        log.error(message, extra={"trigger": attempt.trigger, "version": attempt.version})
        self.events.emit(ConfigReloaded("error", message, attempt.problems, attempt.trigger))

    async def _retire(self, plane: DataPlane) -> None:
        """Close a replaced data plane's connection pools once its last request has ended."""
        try:
            await plane.wait_idle()
        finally:
            self._retired.discard(plane)
            await plane.close_clients(keep=[c for p in (self.dataplane, *self._retired) for c in p.clients.values()])

    async def _watch_files(self, interval: float) -> None:
        """Poll the config files; reload when a change has settled (:class:`ChangeDetector`)."""
        while True:
            await asyncio.sleep(interval)
            try:
                current = await asyncio.to_thread(fingerprint, watched_files(self.config))
                if self._changes.observe(current):
                    await self.reload("file")
            except Exception:
                log.exception("watching the config files failed")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close_planes(self) -> None:
        for plane in (self.dataplane, *self._retired):
            await plane.close_clients()
        self._retired.clear()

    async def close(self) -> None:
        """Stop everything :meth:`start` started, in reverse order (a second call does nothing)."""
        self._closing = True
        await self._stack.aclose()


def slack_alerts(config: Config, emit: Callable[[object], None]) -> SlackAlerts | None:
    """Slack alerts when a token is configured, else None.

    Imported only then: slack-sdk and the alert rules cost every start about 3 MiB and a quarter of the
    sidecar's own import time (bench/README.md, "Start-up and footprint"); a sidecar without a token
    never uses them."""
    if not config.slack:
        return None
    from proxy.observe.alerts.slack import SlackAlerts

    return SlackAlerts(config.slack, emit)


def sentry_reporter(config: Config) -> SentryReporter | None:
    """Sentry reports when a DSN is configured, else None (the module, like sentry-sdk, is loaded only then)."""
    if not config.sentry:
        return None
    from proxy.observe.sentry import SentryReporter

    return SentryReporter(config.sentry)


async def serve(config: Config, *, reuse_port: bool = False, watch_interval: float | None = 0.5,
                supervisor: int | None = None, ready: Callable[[], None] | None = None) -> None:
    """Serve ``config`` until SIGTERM or SIGINT, then drain and return; reload on SIGHUP.
    ``ready`` is called once both listeners are bound.

    ``supervisor``: the pid of the ``--workers`` supervisor, sent SIGHUP after an admin reload so
    that every worker reloads, not only the one that answered."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tell = None if supervisor is None else functools.partial(os.kill, supervisor, signal.SIGHUP)
    sidecar = Sidecar(config, reuse_port=reuse_port, watch_interval=watch_interval, tell_workers=tell)

    def on_stop(signum: int) -> None:
        if stop.is_set():  # the second one (Ctrl-C twice): the operator does not want to wait for the drain
            exit_now(sidecar, signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    reloads: set[asyncio.Task[ReloadAttempt]] = set()

    def on_hangup() -> None:
        task = loop.create_task(sidecar.reload("signal"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await sidecar.start()
        if ready is not None:
            ready()
        await stop.wait()
        # Not removed: without a handler SIGHUP's default action would kill the draining process.
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: draining"))
        await sidecar.drain()
    finally:
        await sidecar.close()


def exit_now(sidecar: Sidecar, signum: int) -> NoReturn:
    """End the process at once with status 128 + ``signum``, cutting in-flight requests short;
    the buffered access lines and log records are written first."""
    log.warning("second %s during the drain: exiting now", signal.Signals(signum).name,
                extra={"in_flight": sidecar.in_flight})
    sidecar.access_log.flush()
    logging.shutdown()
    os._exit(128 + signum)
