"""One event sent to the app at once, its answer read back: ``mode: sync`` and ``on_backend_error: passthrough``.

The request is the one a delivery attempt sends (the provider's method, query, body and end-to-end
headers, plus ``X-Webhook-Id``, ``X-Webhook-Attempt: 1`` and ``X-Webhook-Verified``), so the app
cannot tell a forwarded event from a queued one. The answer is read whole, up to
:data:`MAX_ANSWER` bytes, because it goes back to the provider (Twilio executes TwiML).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from proxy.config.webhooks import Webhook
from proxy.state.webhooks import InboundEvent

MAX_ANSWER = 2**20
"""An app's answer to a webhook is TwiML or nothing: a larger one is treated as no answer."""
NOT_SENT = frozenset({"host", "content-length", "transfer-encoding", "connection", "x-webhook-id",
                      "x-webhook-attempt", "x-webhook-verified"})
"""Provider headers not passed on: the client sets the first ones; ours are set here."""
TIMEOUT, CONNECT_ERROR, LOST = "timeout", "connect_error", "lost"


@dataclass(frozen=True)
class AppAnswer:
    status: int = 0
    """0 when the app gave no answer (``error`` says why)."""
    body: bytes = b""
    content_type: str = ""
    error: str = ""
    """TIMEOUT, CONNECT_ERROR or LOST (the connection broke, or the answer was too large)."""

    @property
    def failed(self) -> bool:
        """No answer, or a 5xx: the event must not be lost (queued, or the provider told to retry)."""
        return self.status == 0 or self.status >= 500


def delivery_url(deliver_to: str, query: str) -> str:
    """``deliver_to`` with the provider's query (Twilio's callbacks may carry one the app reads)."""
    return deliver_to + ("&" if "?" in deliver_to else "?") + query if query else deliver_to


def delivery_headers(event: InboundEvent, event_id: str, attempt: int) -> list[tuple[str, str]]:
    headers = [(name, value) for name, value in event.headers if name.lower() not in NOT_SENT]
    return headers + [("X-Webhook-Id", event_id), ("X-Webhook-Attempt", str(attempt)),
                      ("X-Webhook-Verified", event.verified)]


async def forward(session: aiohttp.ClientSession, webhook: Webhook, event: InboundEvent) -> AppAnswer:
    """Send ``event`` (with its ``event_id``) to ``webhook.deliver_to`` as attempt 1; never raises for the app's
    failures."""
    try:
        async with session.request(event.method, delivery_url(webhook.deliver_to, event.query), data=event.body,
                                   headers=delivery_headers(event, event.event_id, 1), allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=webhook.delivery.timeout)) as response:
            body = await read_at_most(response.content, MAX_ANSWER)
            if body is None:
                return AppAnswer(error=LOST)
            return AppAnswer(response.status, body, response.headers.get("Content-Type", ""))
    except TimeoutError:
        return AppAnswer(error=TIMEOUT)
    except aiohttp.ClientConnectorError:
        return AppAnswer(error=CONNECT_ERROR)
    except (aiohttp.ClientError, OSError):
        return AppAnswer(error=LOST)


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole stream, or None as soon as it passes ``limit`` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
