"""The Redis rate-limit store: GCRA buckets shared by every replica, each request decided by one script.

One :meth:`RedisLimitStore.acquire` is one round trip: an EVALSHA of ``lua/ratelimit.lua`` that reads
every bucket of the request, decides them as :func:`proxy.policy.ratelimit.decide` does and charges
them only when the request passes. Running it in one script makes "all limits or none" atomic across
the fleet. The caller passes its clock's ``now`` (as the breaker scripts do) and every time travels
in whole microseconds, as the pure rules count, so the Lua gives the memory store's verdicts to the
last bit and tests can drive it with a FakeClock.

A bucket is the string key ``<prefix>{rl:<upstream>}:<bucket>`` holding its TAT, set with a PX that
ends when the bucket is full again, so idle buckets cost Redis no memory. (PX runs on Redis's clock;
being a duration, it does not care how far the replicas' clocks are from Redis's.) Redis Cluster lets a script
touch only keys of one slot; the hash tag ``{rl:<upstream>}`` puts every bucket of an upstream in one
slot, and every check of a request names the same upstream, so one script may spend them all. (The
price is that one upstream's buckets share one shard; the ``rl:`` keeps them off the breakers' slots.)
On a ``redis+cluster://`` URL the store spreads the buckets instead, one slot per limit key, one
script per slot, and refunds what a denied request was charged elsewhere: see
:mod:`proxy.state.redis.limit_shards` for the keys and what that keeps of "all limits or none".

A request never waits on Redis longer than ``timeout`` (one timer for all of them:
:mod:`proxy.state.redis.deadlines`; on a cluster, a request denied on one slot and refunded on others:
twice). When a call fails the store marks Redis down,
raises :class:`BackendUnavailable` (the limiter applies each limit's ``on_backend_error``) and from
then on raises at once without calling Redis, while a PING every ``retry_interval`` in the background
waits for it to answer again. A call that only ran out of time is decided without Redis, and a PING
allowed a few timeouts confirms the outage before the store goes down: under load the event loop
itself can be late by more than a 50 ms timeout while Redis answered in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from proxy.clock import Clock, SystemClock
from proxy.config.policy_values import MICROS, micros
from proxy.config.redis_url import is_cluster
from proxy.policy.ratelimit import Check, Verdict
from proxy.state.base import BackendTimeout, BackendUnavailable
from proxy.state.redis import limit_shards as shards
from proxy.state.redis.client import (
    CONFIRM_FACTOR,
    RedisHealth,
    cancel_tasks,
    close_quietly,
    connect,
    describe,
    reconnect,
    translated,
)
from proxy.state.redis.cluster import ClusterLanes
from proxy.state.redis.deadlines import Deadlines
from proxy.state.redis.lane import Lane
from proxy.state.redis.scripts import Scripts

log = logging.getLogger("resilience_proxy.state")

SCRIPTS = Scripts("ratelimit", "ratelimit_hold")
CLUSTER_SCRIPTS = Scripts("ratelimit", "ratelimit_hold", "ratelimit_refund")
"""A cluster's: a request denied on one slot is refunded on the others."""
_SPELLED_MAX = 10_000
"""Checks whose Redis key and arguments are kept; past it they start over."""


def bucket_key(prefix: str, check: Check) -> str:
    """``rp:{rl:twilio}:per_org:acme``: the hash tag keeps an upstream's buckets in one Cluster slot."""
    return f"{prefix}{{rl:{check.group}}}:{check.bucket}"


class RedisLimitStore(RedisHealth):
    """Rate-limit buckets in Redis, shared by every replica that uses the same ``prefix``."""

    _what = "rate limits"

    def __init__(self, redis_url: str, *, prefix: str = "rp:", clock: Clock | None = None,
                 timeout: float = 0.05, retry_interval: float = 1.0) -> None:
        super().__init__(redis_url, retry_interval)
        self._url = redis_url
        self._prefix = prefix
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._client: aioredis.Redis | None = None
        self._lane: Lane | ClusterLanes | None = None
        """The hot path's own connection (a cluster: one per master): each request's EVALSHA goes out
        with whatever else has queued."""
        self._sharded = is_cluster(redis_url)
        self._scripts = CLUSTER_SCRIPTS if self._sharded else SCRIPTS
        self._checking = False
        """A PING is on its way to tell a hung Redis from a late event loop."""
        self._deadlines = Deadlines(timeout)
        self._spelled: dict[int, tuple[Check, str, int, int, int]] = {}
        """By ``id`` of a check (the entry holds it): its key and its ARGV (interval, tolerance, enforcing).
        The limiter reuses a check for every request with the same key value."""

    # -- the LimitStore protocol ------------------------------------------------------------------

    async def acquire(self, checks: Sequence[Check]) -> list[Verdict]:
        if not checks:
            return []
        if self._sharded:
            rows = await self._acquire_by_slot(checks, micros(self._clock.now()))
        else:
            keys: list[str] = []
            args: list[int] = [micros(self._clock.now())]
            spelled = self._spelled
            for check in checks:
                known = spelled.get(id(check))
                if known is None or known[0] is not check:
                    known = self._spell(check)
                keys.append(known[1])
                args += known[2:]
            rows = await self._call("ratelimit", keys, args)
        try:
            return [Verdict(allowed == "1", int(remaining), int(reset) / MICROS, int(retry_after) / MICROS)
                    for allowed, remaining, reset, retry_after in rows]
        except (TypeError, IndexError, ValueError) as error:  # not our script's reply
            raise self._failed(error) from error

    async def hold(self, checks: Sequence[Check], seconds: float) -> None:
        if not checks:
            return
        now = micros(self._clock.now())
        keys = [self._key(check) for check in checks]
        groups = shards.by_slot(keys) if self._sharded else [list(range(len(checks)))]
        await self._each_slot("ratelimit_hold", [(
            [keys[i] for i in group], [now, micros(seconds), *(checks[i].rate.tolerance for i in group)])
            for group in groups])

    async def start(self) -> None:
        """Connect and load the scripts; if Redis does not answer, start down and keep trying. Never raises."""
        self._client = connect(self._url, self._timeout)
        await self._first_connect("rate limits fall back to on_backend_error")

    async def close(self) -> None:
        """Stop the recovery and close the connections; never raises."""
        self._closing = True
        self._up = False
        self._deadlines.close()
        await cancel_tasks(list(self._tasks))
        if self._lane is not None:
            await close_quietly(self._lane.close)
        if self._client is not None:
            await close_quietly(self._client.aclose)

    # -- talking to Redis -------------------------------------------------------------------------

    async def _acquire_by_slot(self, checks: Sequence[Check], now: int) -> list[Any]:
        """Cluster: one script per slot, all at once; what a denied request cost the other slots is refunded."""
        keys = [self._key(check) for check in checks]
        groups = shards.by_slot(keys)
        if len(groups) == 1:
            return await self._call("ratelimit", keys, _acquire_args(now, checks))
        replies = await self._each_slot("ratelimit", [
            ([keys[i] for i in group], _acquire_args(now, [checks[i] for i in group])) for group in groups])
        rows: list[Any] = [None] * len(checks)
        try:
            for group, reply in zip(groups, replies, strict=True):
                for index, row in zip(group, reply, strict=True):
                    rows[index] = row
            refunds = shards.refunds(checks, groups, rows, now, micros(self._clock.now()))
        except (TypeError, IndexError, ValueError) as error:  # not our script's reply
            raise self._failed(error) from error
        if refunds:
            back = [([keys[i] for i, _ in slot], [micros(self._clock.now()), *(amount for _, amount in slot)])
                    for slot in refunds]
            with contextlib.suppress(BackendUnavailable):  # denied either way; what stays charged errs safe
                await self._each_slot("ratelimit_refund", back)
        return rows

    async def _each_slot(self, script: str, calls: Sequence[tuple[Sequence[str], Sequence[int]]]) -> list[Any]:
        """Run ``script`` once per (keys, args), all at once; raises the first failure once all are done."""
        if len(calls) == 1:
            return [await self._call(script, *calls[0])]
        replies = await asyncio.gather(*(self._call(script, keys, args) for keys, args in calls),
                                       return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    def _key(self, check: Check) -> str:
        return shards.shard_key(self._prefix, check) if self._sharded else bucket_key(self._prefix, check)

    def _spell(self, check: Check) -> tuple[Check, str, int, int, int]:
        if len(self._spelled) >= _SPELLED_MAX:
            self._spelled.clear()
        known = self._spelled[id(check)] = (check, bucket_key(self._prefix, check), check.rate.interval,
                                            check.rate.tolerance, 1 if check.enforcing else 0)
        return known

    async def _call(self, script: str, keys: Sequence[str], args: Sequence[int]) -> Any:
        """One EVALSHA within the timeout (a second one only after Redis lost the scripts)."""
        if not self._up or self._client is None:
            raise BackendUnavailable(f"Redis at {self._shown_url} is down")
        assert self._lane is not None
        try:
            with translated(), self._deadlines.call():
                return await self._scripts.call(self._client, script, keys, args, execute=self._lane.execute)
        except BackendTimeout as error:
            self._backend_failures += 1
            self._suspect(keys[0])
            raise BackendTimeout(f"Redis at {self._shown_url}: no answer in {self._timeout * 1000:g} ms") from error
        except BackendUnavailable as error:
            raise self._failed(error) from error

    def _suspect(self, key: str) -> None:
        """A request ran out of time: Redis may hang, or this process's event loop may just be behind
        (a saturated sidecar takes tens of milliseconds to get back to a reply that came in time).
        That request is decided without Redis; a PING through the same connection, allowed
        ``CONFIRM_FACTOR`` times the timeout, decides whether the store stops calling Redis (in a
        cluster, through the lane of ``key``'s master: the node that call waited on). Errors that prove
        Redis gone (a reset, a refused connection) take it down at once."""
        if self._checking or not self._up or self._closing:
            return
        self._checking = True
        self._spawn(self._confirm(key))

    async def _confirm(self, key: str) -> None:
        assert self._lane is not None
        try:
            with translated():
                async with asyncio.timeout(self._timeout * CONFIRM_FACTOR):
                    await self._lane.ping_for(key)
        except BackendUnavailable as error:
            self._failed(error)
        finally:
            self._checking = False

    def _failed(self, error: BaseException) -> BackendUnavailable:
        """Count the failure, mark Redis down (once) and start waiting for it; the error to raise."""
        self._backend_failures += 1
        if self._up and not self._closing:
            self._up = False
            log.warning("Redis at %s failed (%s): rate limits fall back to on_backend_error until it answers",
                        self._shown_url, describe(error))
            self._recovering()
        return BackendUnavailable(f"Redis at {self._shown_url} failed: {describe(error)}")

    async def _master_moved(self) -> None:
        if self._lane is not None:
            await self._lane.close()  # its callers fail over to on_backend_error; _connect builds a new one
        await super()._master_moved()

    async def _connect(self) -> None:
        assert self._client is not None
        if self._sharded:
            if self._lane is not None:
                await self._lane.close()
            await reconnect(self._client)  # the slot map read again, every master answers
            self._lane = ClusterLanes(self._client)
            await self._lane.connect()
        else:
            await self._client.connection_pool.disconnect()  # connections from before a restart are dead
            if self._lane is not None:
                await self._lane.close()
            self._lane = Lane(self._client.connection_pool)
            await self._lane.connect()
            await self._client.ping()
        await self._scripts.load(self._client)
        self._up = True


def _acquire_args(now: int, checks: Sequence[Check]) -> list[int]:
    """ARGV of ratelimit.lua: now, then interval, tolerance and enforcing per bucket."""
    args = [now]
    for check in checks:
        args += (check.rate.interval, check.rate.tolerance, 1 if check.enforcing else 0)
    return args
