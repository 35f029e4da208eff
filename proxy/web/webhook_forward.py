"""Sending one event to the app: the one request both a delivery attempt and ``mode: sync`` /
``on_backend_error: passthrough`` make.

The request is the provider's method, query, body and end-to-end headers, plus ``X-Webhook-Id``,
``X-Webhook-Attempt`` and ``X-Webhook-Verified``, so the app cannot tell a forwarded event from a
queued one. A forwarded event's answer is read whole, up to :data:`MAX_ANSWER` bytes, because it goes
back to the provider (Twilio executes TwiML); a delivery needs only the status and Retry-After.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from proxy.config.webhooks import Webhook
from proxy.policy.delivery import CONNECT_ERROR, LOST, TIMEOUT
from proxy.state.webhooks import InboundEvent

MAX_ANSWER = 2**20
"""An app's answer to a webhook is TwiML or nothing: a larger one is treated as no answer."""
NOT_SENT = frozenset({"host", "content-length", "transfer-encoding", "connection", "x-webhook-id",
                      "x-webhook-attempt", "x-webhook-verified"})
"""Provider headers not passed on: the client sets the first ones; ours are set here."""


@dataclass(frozen=True)
class AppAnswer:
    status: int = 0
    """0 when the app gave no answer (``error`` says why)."""
    body: bytes = b""
    content_type: str = ""
    error: str = ""
    """TIMEOUT, CONNECT_ERROR or LOST (the connection broke, or the answer was too large)."""
    retry_after: str | None = None
    """The app's Retry-After header, unparsed."""

    @property
    def failed(self) -> bool:
        """No answer, or a 5xx: the event must not be lost (queued, or the provider told to retry)."""
        return self.status == 0 or self.status >= 500


def delivery_url(deliver_to: str, query: str) -> str:
    """``deliver_to`` with the provider's query (Twilio's callbacks may carry one the app reads)."""
    return deliver_to + ("&" if "?" in deliver_to else "?") + query if query else deliver_to


def delivery_headers(headers: Sequence[tuple[str, str]], event_id: str, attempt: int,
                     verified: str) -> list[tuple[str, str]]:
    return [(name, value) for name, value in headers if name.lower() not in NOT_SENT] + [
        ("X-Webhook-Id", event_id), ("X-Webhook-Attempt", str(attempt)), ("X-Webhook-Verified", verified)]


async def send(session: aiohttp.ClientSession, webhook: Webhook, *, method: str, query: str,
               headers: Sequence[tuple[str, str]], body: bytes, event_id: str, attempt: int, verified: str,
               read_body: bool) -> AppAnswer:
    """One request to ``webhook.deliver_to``; the app's failures are answers, never exceptions.
    ``read_body``: keep the answer's body (up to :data:`MAX_ANSWER`) for the provider."""
    try:
        async with session.request(method, delivery_url(webhook.deliver_to, query), data=body,
                                   headers=delivery_headers(headers, event_id, attempt, verified),
                                   allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=webhook.delivery.timeout)) as response:
            kept = b""
            if read_body:
                read = await read_at_most(response.content, MAX_ANSWER)
                if read is None:
                    return AppAnswer(error=LOST)
                kept = read
            return AppAnswer(response.status, kept, response.headers.get("Content-Type", ""),
                             retry_after=response.headers.get("Retry-After"))
    except TimeoutError:
        return AppAnswer(error=TIMEOUT)
    except aiohttp.ClientConnectorError:
        return AppAnswer(error=CONNECT_ERROR)
    except (aiohttp.ClientError, OSError):
        return AppAnswer(error=LOST)


async def forward(session: aiohttp.ClientSession, webhook: Webhook, event: InboundEvent) -> AppAnswer:
    """Send ``event`` (with its ``event_id``) as attempt 1 and read the app's answer for the provider."""
    return await send(session, webhook, method=event.method, query=event.query, headers=event.headers,
                      body=event.body, event_id=event.event_id, attempt=1, verified=event.verified, read_body=True)


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
