"""The pipelined lane: many callers, one connection, replies back to the right caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis

from proxy.state.redis.client import connect
from proxy.state.redis.lane import Lane


@pytest.fixture
async def lane(redis_url: str) -> AsyncIterator[Lane]:
    client = connect(redis_url, 1.0)
    lane = Lane(client.connection_pool)
    yield lane
    await lane.close()
    await client.aclose()


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(lane: Lane) -> None:
    replies = await asyncio.gather(*(lane.execute("INCRBY", "counter", n) for n in range(1, 201)))
    assert replies == [sum(range(1, n + 1)) for n in range(1, 201)], "sent, run and answered in call order"
    assert await lane.execute("GET", "counter") == str(sum(range(1, 201)))
    echoes = await asyncio.gather(*(lane.execute("ECHO", f"caller-{n}") for n in range(100)))
    assert echoes == [f"caller-{n}" for n in range(100)], "each caller gets the reply to its own command"
    ids = await asyncio.gather(*(lane.execute("CLIENT", "ID") for _ in range(50)))
    assert len(set(ids)) == 1, "one connection for every caller"


async def test_a_redis_error_fails_its_own_caller_only(lane: Lane) -> None:
    results = await asyncio.gather(lane.execute("ECHO", "a"), lane.execute("EVALSHA", "0" * 40, 0),
                                   lane.execute("ECHO", "b"), return_exceptions=True)
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], redis.exceptions.NoScriptError)


async def test_a_broken_connection_fails_the_waiting_callers_and_the_next_command_reconnects(
    lane: Lane, redis_url: str
) -> None:
    assert await lane.execute("CLIENT", "SETNAME", "lane-under-test")
    with redis.Redis.from_url(redis_url) as admin:
        for entry in admin.client_list():
            if entry.get("name") == "lane-under-test":
                admin.client_kill(entry["addr"])
    with pytest.raises((redis.exceptions.ConnectionError, ConnectionError, OSError)):
        await lane.execute("PING")
    assert await lane.execute("PING") in (True, "PONG")
