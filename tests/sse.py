"""A Server-Sent Events reader for tests: the fields of each message as the spec parses them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Message:
    event: str
    data: str
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


async def messages(response: aiohttp.ClientResponse) -> AsyncIterator[Message]:
    """Each message (comments skipped); a message with only ``retry:`` is yielded with event ``""``."""
    event, data, retry = "message", [], None
    while True:
        raw = await response.content.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n")
        if line == "":
            if data or retry is not None:
                yield Message(event if data else "", "\n".join(data), retry)
            event, data, retry = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                retry = int(value)


async def next_event(stream: AsyncIterator[Message], event: str, deadline: float = 5.0) -> tuple[Message, float]:
    """The next message named ``event`` (others are skipped) and the seconds it took; fails after ``deadline``."""
    started = time.monotonic()
    async with asyncio.timeout(deadline):
        async for message in stream:
            if message.event == event:
                return message, time.monotonic() - started
    raise AssertionError(f"the stream ended before a {event!r} message")
