"""Fixtures for the Sentry tests, imported by them explicitly (this directory's conftest belongs to
the alert tests): a fake ingestion endpoint, and a guard that no test leaves sentry-sdk initialised
(its client, scopes and breadcrumbs are process-global).

    from tests.observe.sentry_fixtures import fake_sentry_fixture, no_sentry_leak_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import sentry_sdk
from aiohttp import web

from tests.observe.fake_sentry import FakeSentry


@pytest.fixture(name="fake_sentry")
async def fake_sentry_fixture() -> AsyncIterator[FakeSentry]:
    """A FakeSentry on a free 127.0.0.1 port; a hanging upload is cut when the test ends."""
    fake = FakeSentry()
    runner = web.AppRunner(fake.app(), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.port = runner.addresses[0][1]
    yield fake
    await runner.cleanup()


async def flush() -> None:
    """Wait until the SDK has sent what it queued. In a thread: the fake Sentry runs on this loop."""
    await asyncio.to_thread(sentry_sdk.flush, 5.0)


@pytest.fixture(name="no_sentry_leak", autouse=True)
def no_sentry_leak_fixture() -> Iterator[None]:
    """Fail a test that leaves a live Sentry client behind, after cleaning up so the next one starts clean."""
    yield
    client = sentry_sdk.get_client()
    leaked = client.is_active()
    if leaked:
        client.close(timeout=0)
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_global_scope().clear_breadcrumbs()
    sentry_sdk.get_isolation_scope().clear_breadcrumbs()
    assert not leaked, "the test left sentry-sdk initialised"
