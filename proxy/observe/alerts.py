"""Slack alerts on breaker transitions and state-backend changes (to be written: issue 6)."""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.model import SlackSettings


class SlackAlerts:
    """Listens on the event bus; queues messages and sends them in the background, never in the request path."""

    def __init__(self, settings: SlackSettings, emit: Callable[[object], None]) -> None:
        self.settings = settings
        self._emit = emit

    def on_event(self, event: object) -> None:
        """The bus listener: must return at once."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
