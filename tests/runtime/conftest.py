"""The loopback app the delivery tests deliver to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.webhook_app import App


@pytest.fixture
async def app() -> AsyncIterator[App]:
    app = App()
    await app.start()
    yield app
    if app.hold is not None:
        app.hold.set()
    await app.stop()
