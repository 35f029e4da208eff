"""Sentry error reports without PII (to be written: issue 6)."""

from __future__ import annotations

from proxy.config.model import SentrySettings


class SentryReporter:
    """Listens on the event bus; reports final failures and unexpected exceptions to Sentry, scrubbed."""

    def __init__(self, settings: SentrySettings) -> None:
        self.settings = settings

    def on_event(self, event: object) -> None:
        """The bus listener: must return at once."""

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
