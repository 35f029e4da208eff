"""The SSE fan-out: bounded per-client queues that drop to the latest, and a client that stops reading
never holds up publishing or the other clients."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from proxy.web.admin import stream as stream_module
from proxy.web.admin.stream import QUEUE, EventStream, _Client
from tests.sse import messages, next_event


async def test_stats_replace_stats_and_transitions_beyond_the_bound_drop_oldest_first() -> None:
    client = _Client()
    client.put("transition", False, b"t1")
    client.put("stats", True, b"s1")
    client.put("transition", False, b"t2")
    client.put("stats", True, b"s2")
    assert [m for _, _, m in client.queue] == [b"t1", b"t2", b"s2"], "the newer stats replace the older, in order"
    for i in range(3, QUEUE + 3):
        client.put("transition", False, f"t{i}".encode())
    queued = [m for _, _, m in client.queue]
    assert len(queued) == QUEUE and b"s2" in queued, "the latest stats are never what overflows"
    assert queued[-1] == f"t{QUEUE + 2}".encode() and b"t1" not in queued
    assert client.take() == b"".join(queued) and not client.queue


async def test_a_client_that_stops_reading_is_cut_and_slows_nobody(
    aiohttp_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(stream_module, "WRITE_TIMEOUT", 0.5)
    stream = EventStream()

    async def first() -> bytes:
        return b"event: snapshot\ndata: {}\n\n"

    async def handler(request: web.Request) -> web.StreamResponse:
        return await stream.serve(request, first)

    app = web.Application()
    app.router.add_get("/stream", handler)
    server = await aiohttp_server(app)

    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    stuck.setblocking(False)
    await asyncio.get_running_loop().sock_connect(stuck, ("127.0.0.1", server.port))
    stuck.send(f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{server.port}/stream") as reader:
            events = messages(reader)
            await next_event(events, "snapshot")
            received: list[object] = []

            async def read() -> None:  # a browser that keeps up
                async for message in events:
                    if message.event == "stats":
                        received.append(message.json()["n"])

            reading = asyncio.create_task(read())
            deadline = time.monotonic() + 5
            while stream.clients < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert not asyncio.iscoroutinefunction(stream.publish), "publishing cannot wait for a client"
            big = "x" * 200_000
            for i in range(100):
                stream.publish("stats", f'{{"n":{i},"pad":"{big}"}}', latest_only=True)
                stream.publish("transition", f'{{"n":{i}}}')
                assert all(len(client.queue) <= QUEUE for client in stream._clients)
                await asyncio.sleep(0.01)
            while stream.clients > 1:
                assert time.monotonic() < deadline + 10, "the stuck client was never cut"
                await asyncio.sleep(0.05)
            stream.publish("stats", '{"n":"after"}', latest_only=True)
            while "after" not in received:
                assert not reading.done(), "the reader's stream ended"
                assert time.monotonic() < deadline + 15, "the reader never got the latest stats"
                await asyncio.sleep(0.05)
            assert len(received) > 1, "the reader had the stats while the other client was stuck"
            reading.cancel()
    finally:
        stuck.close()
