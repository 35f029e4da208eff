"""A running sidecar loads what its config uses, and nothing else.

The sidecar starts in every pod, and what it imports is start-up time and memory in each. Sentry without
a DSN, Slack without a token, Redis with ``backend: memory``, inbound webhooks nobody declared, and the
code of the other commands (``validate``'s linter, ``schema``, ``doctor``, ``inject``, ``--workers``) must
cost a ``run`` nothing. Each test runs the real ``python -X importtime -m proxy run``, serves a request and
a scrape, stops it, and reads every module the process imported from the interpreter's own report.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.fake_slack import FakeSlack
from tests.observe.fake_sentry import FakeSentry
from tests.observe.sentry_fixtures import fake_sentry_fixture  # noqa: F401
from tests.processes import SidecarProcess

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_ENV = ("SENTRY_DSN", "SLACK_BOT_TOKEN", "REDIS_URL", "ADMIN_TOKEN")
"""What the example config reads from the environment; none is set for the example's own test."""
OPTIONAL = {
    "sentry_sdk": "Sentry without a DSN",
    "slack_sdk": "Slack without a token",
    "redis": "Redis with backend: memory",
    "hiredis": "Redis with backend: memory",
    "proxy.state.redis": "Redis with backend: memory",
    "proxy.observe.sentry": "Sentry without a DSN",
    "proxy.observe.alerts": "Slack without a token",
    "proxy.runtime.delivery": "webhooks, none declared",
    "proxy.web.webhooks": "webhooks, none declared",
    "proxy.state.memory_webhooks": "webhooks, none declared",
    "proxy.config.webhooks": "webhooks, none declared",
    "proxy.config.webhook_reader": "webhooks, none declared",
    "proxy.config.lint": "validate and doctor",
    "proxy.config.schema": "schema",
    "jsonschema": "nothing (a test dependency)",
    "proxy.doctor": "doctor",
    "proxy.k8s": "inject and injector",
    "jsonpatch": "the injector",
    "proxy.runtime.workers": "--workers N",
    "multiprocessing": "--workers N",
}
"""Modules (with their submodules) and what alone may load them."""


def imported(log: str) -> set[str]:
    """Every module the process imported, from ``-X importtime``'s lines (``import time: self | cum | name``)."""
    return {line.rsplit("|", 1)[1].strip() for line in log.splitlines()
            if line.startswith("import time:") and not line.rstrip().endswith("imported package")}


def loaded_of(modules: set[str], prefix: str) -> list[str]:
    return sorted(m for m in modules if m == prefix or m.startswith(prefix + "."))


def example_config(directory: Path, port: int, admin_port: int, **edits: str) -> Path:
    """The shipped config.example.yaml and policies/, on free ports; ``edits``: more text replaced."""
    text = (ROOT / "config.example.yaml").read_text()
    for shipped, replacement in {"127.0.0.1:8080": f"127.0.0.1:{port}", "127.0.0.1:9901": f"127.0.0.1:{admin_port}",
                                 **edits}.items():
        assert text.count(shipped) == 1, f"config.example.yaml no longer has one {shipped!r}"
        text = text.replace(shipped, replacement)
    shutil.copytree(ROOT / "policies", directory / "policies")
    (directory / "config.example.yaml").write_text(text)
    return directory / "config.example.yaml"


async def run_once(process: SidecarProcess, request_path: str, scraped: str = "resilience_proxy_build_info",
                   deadline: float = 10.0) -> tuple[int, str]:
    """Wait until ready, send one request to the data port, scrape /metrics until it shows ``scraped``,
    then stop: the data port's status and the last scrape (so lazy imports on the first request or
    scrape are seen too)."""
    try:
        await process.wait_ready()
        async with aiohttp.ClientSession() as http:
            async with http.get(process.url + request_path) as response:
                status = response.status
            end = time.monotonic() + deadline
            while True:
                async with http.get(process.admin_url + "/metrics") as response:
                    metrics = await response.text()
                if scraped in metrics or time.monotonic() > end:
                    break
                await asyncio.sleep(0.05)
        process.signal()
        assert await process.wait_exit() == 0, process.log
    finally:
        process.stop()
    return status, metrics


async def test_the_example_config_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    config = example_config(tmp_path, port, admin_port)
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    process = SidecarProcess(tmp_path, {}, python=("-X", "importtime"), env=env, config=(config, port, admin_port))
    status, metrics = await run_once(process, "/nowhere")
    assert status == 404  # the sidecar's own answer: no upstream has this prefix
    assert "resilience_proxy_build_info" in metrics
    modules = imported(process.log)
    assert {"aiohttp", "uvloop", "yaml", "prometheus_client", "proxy.runtime.sidecar"} <= modules, \
        "the report was read: these are always imported"
    unused = {prefix: loaded_of(modules, prefix) for prefix in OPTIONAL}
    assert {prefix: found for prefix, found in unused.items() if found} == {}, "imported, though used only by: " + \
        ", ".join(f"{prefix} ({OPTIONAL[prefix]})" for prefix, found in unused.items() if found)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(token="xoxb-test")
    runner = web.AppRunner(fake.app(), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/"
    yield fake
    fake.release()
    await runner.cleanup()


async def test_what_the_config_turns_on_is_imported_and_works(tmp_path: Path, redis_url: str, slack: FakeSlack,
                                                              fake_sentry: FakeSentry) -> None:
    """The counterpart: with a DSN, a token and ``backend: redis`` each part is loaded, and does its job."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a final failure that Sentry reports
    process = SidecarProcess(
        tmp_path, {"api": {"url": dead, "prefix": "/api"}}, python=("-X", "importtime"),
        state={"backend": "redis", "redis_url": redis_url, "redis_timeout": "1s", "key_prefix": f"rp-{tmp_path.name}:"},
        alerts={"slack": {"token": "xoxb-test", "channel": "#alerts", "base_url": slack.base_url}},
        errors={"sentry": {"dsn": fake_sentry.dsn, "environment": "test"}})
    status, metrics = await run_once(process, "/api/x", scraped="resilience_proxy_state_backend_up 1.0")
    assert status == 502
    assert "resilience_proxy_state_backend_up 1.0" in metrics, "running on Redis, not on its local fallback"
    end = time.monotonic() + 10.0
    while not fake_sentry.events or "auth.test" not in [call.method for call in slack.calls]:
        assert time.monotonic() < end, f"Sentry events {len(fake_sentry.events)}, Slack calls {slack.calls}"
        await asyncio.sleep(0.05)
    modules = imported(process.log)
    for prefix in ("sentry_sdk", "slack_sdk", "redis", "proxy.state.redis", "proxy.observe.sentry",
                   "proxy.observe.alerts.slack"):
        assert loaded_of(modules, prefix), prefix
