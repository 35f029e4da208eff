"""Every PromQL expression of the Grafana dashboard, evaluated by a real Prometheus that scraped a real sidecar.

One sidecar process (Redis state, an inbound webhook) serves traffic that exercises every family the
dashboard shows: plain calls, a route whose upstream answers 429 then 200 (retries, upstream throttling),
a route whose upstream always answers 503 (a breaker opens, calls fail fast, retries are refused), a route
under a tight rate limit and one under a shadow limit, a prefix that matches no upstream, and signed Twilio
status callbacks delivered to an app. Prometheus (Debian's package, on loopback, scraping the admin port
every second) must then answer each dashboard query with at least one finite sample, with the template
variables set as Grafana sets them for "All" (tests/deploy/dashboard.py).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.conftest import write_config
from tests.deploy.dashboard import expressions, load, substitute, variable_queries
from tests.processes import SidecarProcess, start_on_any_ports
from tests.prometheus_server import PrometheusServer
from tests.web.webhook_rig import PUBLIC, STATUS, TOKEN, signed

DEADLINE = 25.0
"""From Prometheus (started after the sidecar) being ready to every query answering: the first scrape alone comes up to 5 s
after Prometheus starts (its discovery updates are throttled), the rates need two more."""


class Upstream:
    """The third party behind the sidecar, and the app its webhooks are delivered to, in one loopback app."""

    def __init__(self) -> None:
        self.flaky = itertools.cycle([429, 200])
        self.delivered = 0

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        if path == "/flaky":
            return web.json_response({}, status=next(self.flaky))
        if path == "/broken":
            return web.json_response({"error": "down"}, status=503)
        if path == "/hooks-app":
            await request.read()
            self.delivered += 1
            return web.Response(text="ok")
        return web.json_response({"ok": True})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    app_state = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", app_state.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield app_state, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def policies(url: str) -> dict[str, dict[str, Any]]:
    quick_retry = {"attempts": 2, "backoff": {"initial": "5ms", "max": "5ms", "jitter": 0}, "on": [429, 503]}
    return {"api": {
        "url": url,
        "breaker": {"consecutive_failures": 3, "open_for": "60s", "jitter": 0},
        "routes": [
            {"name": "flaky", "path": "/flaky", "retry": quick_retry},
            {"name": "broken", "path": "/broken", "retry": {**quick_retry, "attempts": 1}},
            {"name": "limited", "path": "/limited",
             "rate_limits": [{"name": "tight", "key": "global", "limit": 1, "per": "1s", "burst": 1}]},
            {"name": "shadowed", "path": "/shadowed",
             "rate_limits": [{"name": "trial", "key": "global", "limit": 1, "per": "1s", "burst": 1,
                              "shadow": True}]},
        ],
    }}


async def start_sidecar(directory: Path, url: str, redis_url: str) -> tuple[SidecarProcess, str]:
    """The sidecar, ready, on ports it chose itself; and its webhooks listener's URL."""
    path = write_config(directory, policies(url), listen="127.0.0.1:0", admin={"listen": "127.0.0.1:0"},
                        state={"backend": "redis", "redis_url": redis_url}, webhooks={"listen": "127.0.0.1:0"},
                        log={"level": "info", "access": False})
    hook = {"path": "/hooks/twilio/status", "deliver_to": f"{url}/hooks-app", "provider": "twilio",
            "twilio": {"auth_token": TOKEN, "public_url": PUBLIC}}
    (directory / "policies" / "hooks.yaml").write_text(yaml.safe_dump({"webhooks": {"twilio_status": hook}}))
    sidecar, hooks = await start_on_any_ports(directory, path, 60)  # a deadline: a loaded machine is slow
    return sidecar, f"http://127.0.0.1:{hooks}"


async def drive(sidecar: SidecarProcess, hooks_url: str, stop: asyncio.Event) -> int:
    """One round of every kind of call each 100 ms until ``stop`` (bounded: 40 s, 400 rounds); the rounds made."""
    body = urlencode(STATUS).encode()
    end = time.monotonic() + 40
    rounds = 0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set() and time.monotonic() < end and rounds < 400:
            for path in ("/api/ok", "/api/flaky", "/api/broken", "/api/limited", "/api/shadowed", "/nowhere"):
                async with http.get(sidecar.url + path) as response:
                    await response.read()
            headers = {**signed(STATUS), "I-Twilio-Idempotency-Token": f"idem-{rounds}"}
            async with http.post(hooks_url + "/hooks/twilio/status", data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
            rounds += 1
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
    return rounds


def finite(samples: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in samples)


def read(samples: list[dict[str, Any]], labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    """A panel's answer as {label values: value}."""
    return {tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1]) for s in samples}


POSITIVE = object()
"""Expected: more than 0 (a rate while traffic flows)."""
PRESENT = object()
"""Expected: the series exists, whatever its value (something that happened once, maybe before the first scrape)."""

EXPECTED: list[tuple[str, tuple[str, ...], tuple[str, ...], object]] = [
    ("Breaker state / A", ("upstream", "route"), ("api", "broken"), 2),
    ("Breaker state / A", ("upstream", "route"), ("api", "flaky"), 0),
    ("Breakers not closed / A", (), (), 1),
    ("Failed fast by an open breaker / A", ("upstream", "route"), ("api", "broken"), POSITIVE),
    ("Request rate by upstream / A", ("upstream",), ("api",), POSITIVE),
    ("Retries by reason / A", ("upstream", "reason"), ("api", "429"), POSITIVE),
    ("Retries refused / A", ("upstream", "reason"), ("api", "attempts_exhausted"), PRESENT),
    ("Upstream throttling / A", ("upstream", "reason"), ("api", "429"), POSITIVE),
    ("Rate-limit decisions / A", ("limit", "outcome"), ("tight", "rejected"), POSITIVE),
    ("Rate-limit decisions / A", ("limit", "outcome"), ("trial", "shadow_rejected"), POSITIVE),
    ("Refused before routing / A", ("reason",), ("destination_not_found",), POSITIVE),
    ("State backend / A", (), (), 1),
    ("Received by result / A", ("webhook", "result"), ("twilio_status", "accepted"), POSITIVE),
    ("Delivery attempts by result / A", ("webhook", "result"), ("twilio_status", "completed"), POSITIVE),
]
"""What an operator reads off some panels, given the traffic ``drive`` sends."""


def unmet(answers: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    for title, labels, key, expected in EXPECTED:
        values = read(answers[title], labels)
        value = values.get(key)
        met = (value is not None if expected is PRESENT else value is not None and value > 0 if expected is POSITIVE
               else value == expected)
        if not met:
            problems.append(f"  {title}: {dict(zip(labels, key))} is {value}, not {expected}; all: {values}")
    return problems


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    tmp_path: Path, upstream: tuple[Upstream, str], redis_url: str
) -> None:
    dashboard = load()
    queries = {name: substitute(expr) for name, expr in expressions(dashboard)}
    assert len(queries) >= 30
    (tmp_path / "sidecar").mkdir()
    (tmp_path / "prometheus").mkdir()
    prometheus = PrometheusServer(tmp_path / "prometheus")  # skips here when Prometheus is not installed
    sidecar: SidecarProcess | None = None
    stop = asyncio.Event()
    driver: asyncio.Task[int] | None = None
    try:
        sidecar, hooks_url = await start_sidecar(tmp_path / "sidecar", upstream[1], redis_url)
        await asyncio.to_thread(prometheus.start, [f"127.0.0.1:{sidecar.admin_port}"])
        started = time.monotonic()
        driver = asyncio.create_task(drive(sidecar, hooks_url, stop))
        while True:
            await asyncio.sleep(0.5)
            if driver.done():
                driver.result()  # a failed call fails the test with its own message
            answers = dict(zip(queries, await asyncio.gather(
                *(asyncio.to_thread(prometheus.query, expr) for expr in queries.values()))))
            empty = [f"  {name}: {queries[name]}" for name, samples in answers.items() if not finite(samples)]
            problems = empty or unmet(answers)
            if not problems:
                break
            if time.monotonic() - started > DEADLINE:
                raise AssertionError(f"after {DEADLINE:.0f}s, " + ("no finite sample for:\n" if empty else "") +
                                     "\n".join(problems) + f"\n(prometheus log: {prometheus.log[-1000:]})")
        answered_after = time.monotonic() - started

        for variable, selector, label in variable_queries(dashboard):
            found = await asyncio.to_thread(prometheus.api, "series", **{"match[]": substitute(selector)})
            offered = {series[label] for series in found if label in series}
            assert offered >= ({"api"} if label == "upstream" else {"flaky", "broken", "limited"}), (variable, offered)
        print(f"every dashboard query answered {answered_after:.1f}s after Prometheus was ready")
    finally:
        stop.set()
        if driver is not None:
            await asyncio.wait_for(driver, 10)
        prometheus.stop()
        if sidecar is not None:
            sidecar.stop()
