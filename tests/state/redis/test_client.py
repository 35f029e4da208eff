"""The one translation point: what redis-py and the socket raise becomes BackendUnavailable, chained."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    MaxConnectionsError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.state.base import BackendTimeout, BackendUnavailable
from proxy.state.redis.client import translated
from proxy.state.redis.limits import RedisLimitStore
from tests.conftest import free_port


@pytest.mark.parametrize("raised", [
    RedisConnectionError("Connection reset by peer"), ResponseError("WRONGTYPE"),
    ConnectionRefusedError(111, "Connection refused"), ValueError("bad reply"),
    # a cluster's: a failover under way, a slot being moved, no node for a slot, every connection in use
    ClusterDownError("The cluster is down"), MasterDownError("Link with MASTER is down"),
    TryAgainError("Multiple keys request during rehashing of slot"), SlotNotCoveredError("Slot 42 is not covered"),
    MaxConnectionsError("Too many connections")])
def test_a_redis_or_socket_failure_becomes_backend_unavailable_from_the_original(raised: Exception) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        with translated():
            raise raised
    assert type(caught.value) is BackendUnavailable and caught.value.__cause__ is raised
    assert str(caught.value) == str(raised)


async def test_no_answer_in_time_is_a_backend_timeout() -> None:
    with pytest.raises(BackendTimeout, match="TimeoutError"):
        with translated():
            async with asyncio.timeout(0):
                await asyncio.sleep(1)


@pytest.mark.parametrize("message", ["Timeout connecting to server", "Timeout reading from socket"])
def test_redis_pys_own_timeouts_are_backend_timeouts_not_outages(message: str) -> None:
    """A late event loop makes redis-py's socket timeouts fire as it makes asyncio.timeout fire: the
    store must confirm with a PING before deciding locally what the fleet decides once (issue 15; under
    load a burst's cold connections timed out and a half-open breaker admitted 4 probes instead of 2)."""
    raised = RedisTimeoutError(message)
    with pytest.raises(BackendTimeout) as caught:
        with translated():
            raise raised
    assert caught.value.__cause__ is raised


def test_a_pool_wait_that_timed_out_is_a_backend_timeout_not_an_outage() -> None:
    """redis-py's blocking pool raises ConnectionError("No connection available.") from the timeout of
    its wait: every connection was busy (a burst), which says nothing about Redis (seen: 4 probes for 2)."""
    try:
        try:
            raise TimeoutError
        except TimeoutError as waited:
            raise RedisConnectionError("No connection available.") from waited
    except RedisConnectionError as raised:
        with pytest.raises(BackendTimeout) as caught:
            with translated():
                raise raised
        assert caught.value.__cause__ is raised


def test_anything_else_and_our_own_errors_pass_untouched() -> None:
    own = BackendUnavailable("Redis at redis://127.0.0.1:1 is down")
    for raised in (KeyError("a bug"), own):
        with pytest.raises(type(raised)) as caught:
            with translated():
                raise raised
        assert caught.value is raised


@pytest.mark.parametrize("url", ["redis+sentinel://:s3cret@127.0.0.1:{}/mymaster/0",
                                 "redis+cluster://:s3cret@127.0.0.1:{},127.0.0.1:{}"], ids=["sentinel", "cluster"])
async def test_a_password_in_the_url_never_reaches_a_log_line(url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisLimitStore(url.format(free_port(), free_port()), timeout=0.05, retry_interval=0.05)
    await store.start()  # nothing listens: the store starts down and says so
    try:
        assert not store.backend_up
    finally:
        await store.close()
    assert caplog.records and all("s3cret" not in record.getMessage() for record in caplog.records)
    assert any(":***@127.0.0.1" in record.getMessage() for record in caplog.records)
