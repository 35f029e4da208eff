"""Fixtures for the Slack alert tests: a fake Slack on 127.0.0.1 and quick delivery timings.

(The Sentry tests import theirs from ``sentry_fixtures.py`` explicitly.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.observe.alerts import slack as alerts
from tests.fake_slack import FakeSlack

SLACK_TOKEN = "xoxb-test"
SLACK_CHANNEL = "#alerts"


@pytest.fixture
async def slack(aiohttp_server) -> AsyncIterator[FakeSlack]:  # type: ignore[no-untyped-def]
    """A FakeSlack on a free port; ``slack.base_url`` is its API root."""
    fake = FakeSlack(token=SLACK_TOKEN)
    server = await aiohttp_server(fake.app())
    fake.base_url = f"http://127.0.0.1:{server.port}/api/"
    yield fake
    fake.release()  # hanging calls answer before the server closes


@pytest.fixture
def quick_delivery(monkeypatch: pytest.MonkeyPatch) -> alerts.Delivery:
    """Short backoffs and timeouts for in-process sidecars; the close grace stays the production one."""
    delivery = alerts.Delivery(attempts=3, backoff=0.1, call_timeout=0.5, max_retry_after=3.0, close_grace=2.0)
    monkeypatch.setattr(alerts, "DELIVERY", delivery)
    return delivery


def slack_config(slack: FakeSlack, **settings: Any) -> dict[str, Any]:
    """The ``alerts`` section of a config that sends to ``slack``."""
    return {"slack": {"token": SLACK_TOKEN, "channel": SLACK_CHANNEL, "base_url": slack.base_url, **settings}}
