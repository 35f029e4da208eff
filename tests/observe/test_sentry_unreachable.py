"""A Sentry that refuses connections or accepts uploads and never answers must not slow proxying
or shutdown: reports leave from the SDK's own thread, and close waits at most CLOSE_TIMEOUT."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp

from proxy.config.load import load_config
from proxy.observe.sentry import CLOSE_TIMEOUT, SEND_TIMEOUT, ReportLimit
from proxy.runtime.sidecar import Sidecar
from tests.conftest import base_url, free_port, write_config
from tests.observe.fake_sentry import FakeSentry
from tests.observe.sentry_fixtures import fake_sentry_fixture, flush, no_sentry_leak_fixture  # noqa: F401

REQUESTS = 150
"""More than the SDK's queue (100 envelopes), so that reports are also dropped, not only queued."""


async def failing_requests(tmp_path: Path, dsn: str) -> tuple[list[float], float]:
    """Every request's latency through a sidecar whose upstream refuses (each one a report), and how
    long closing the sidecar took."""
    upstreams = {"twilio": {"url": f"http://127.0.0.1:{free_port()}", "prefix": "/twilio", "breaker": False}}
    sidecar = Sidecar(load_config(write_config(tmp_path, upstreams, errors={"sentry": {"dsn": dsn}})))
    assert sidecar.sentry is not None
    sidecar.sentry.limit = ReportLimit(burst=REQUESTS)  # every failure goes to the SDK
    await sidecar.start()
    latencies = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(REQUESTS):
                started = time.perf_counter()
                async with http.post(f"{base_url(sidecar)}/twilio/Messages.json", data={"To": "+15551234567"}) as r:
                    assert r.status == 502
                latencies.append(time.perf_counter() - started)
    finally:
        started = time.perf_counter()
        await sidecar.close()
        closing = time.perf_counter() - started
    return latencies, closing


def assert_fast(latencies: list[float]) -> None:
    # A request that waited for an upload would take SEND_TIMEOUT (5 s) against a hanging Sentry; the
    # median says requests do not wait, the slowest bound that not even one did. Not a speed test: a
    # loaded 2-core machine (load 12) once took 1.007 s for one request, so the bound is half the timeout.
    assert statistics.median(latencies) < 0.05, f"median {statistics.median(latencies):.3f}s"
    assert max(latencies) < SEND_TIMEOUT / 2, f"slowest {max(latencies):.3f}s"


async def test_a_sentry_that_refuses_connections_slows_nothing(tmp_path: Path) -> None:
    latencies, closing = await failing_requests(tmp_path, f"http://key@127.0.0.1:{free_port()}/1")
    assert_fast(latencies)
    assert closing < CLOSE_TIMEOUT + 1.5


async def test_a_sentry_that_never_answers_slows_nothing_and_shutdown_is_bounded(
    tmp_path: Path, fake_sentry: FakeSentry
) -> None:
    fake_sentry.hang = True
    latencies, closing = await failing_requests(tmp_path, fake_sentry.dsn)
    assert fake_sentry.envelopes, "the SDK did try to upload"
    assert_fast(latencies)
    assert closing < CLOSE_TIMEOUT + 1.5, f"close took {closing:.2f}s"
    assert closing >= CLOSE_TIMEOUT - 0.5, "close gave queued reports their chance"


async def test_a_sentry_that_answers_gets_the_reports_before_close_returns(
    tmp_path: Path, fake_sentry: FakeSentry
) -> None:
    upstreams = {"twilio": {"url": f"http://127.0.0.1:{free_port()}", "prefix": "/twilio", "breaker": False}}
    sidecar = Sidecar(load_config(write_config(tmp_path, upstreams, errors={"sentry": {"dsn": fake_sentry.dsn}})))
    await sidecar.start()
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(f"{base_url(sidecar)}/twilio/x") as response:
                assert response.status == 502
    await asyncio.wait_for(sidecar.close(), CLOSE_TIMEOUT + 1.5)  # no explicit flush: close delivers
    assert len(fake_sentry.events) == 3
