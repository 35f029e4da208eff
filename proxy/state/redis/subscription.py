"""The breakers' change notifications: a subscription to ``<prefix>breakers`` on one Redis, or on one
node of a Redis Cluster, moved to another node when that one fails.

Why plain pub/sub on one node for a cluster: the breaker scripts PUBLISH from whichever master serves
the breaker's slot, and a cluster's PUBLISH reaches every node's subscribers (the nodes forward it
over the cluster bus), so a subscription on any one node, master or replica, hears every breaker.
Sharded pub/sub (SSUBSCRIBE, Redis 7) would need one subscription per master serving a breaker, and
the Redis 6.2 of many managed offerings lacks it; keyspace polling would read every breaker every
interval instead of hearing the one that changed within milliseconds. The price of the broadcast is
that each message crosses the cluster bus to every node: breakers change rarely, so it is small.
Each store picks a random node, so a fleet's subscribers (and the fan-out work) spread over the
cluster; when that node fails, :meth:`Subscription.move` subscribes on another one, and the store
reads every breaker once to catch what was published in between (see ``RedisBreakerStore``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from proxy.state.base import BackendUnavailable
from proxy.state.redis import cluster
from proxy.state.redis.client import close_quietly, describe, translated

log = logging.getLogger("resilience_proxy.state")


class Subscription:
    """One channel, subscribed through ``client`` (one Redis), or on one node of a cluster client."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._pubsub: Any = None
        self._node_client: aioredis.Redis | None = None
        self.node: str | None = None
        """The cluster node subscribed to (``host:port``); None for one Redis."""

    @property
    def movable(self) -> bool:
        """Whether another node can take over when this one fails (a cluster's; one Redis has no other)."""
        return isinstance(self._client, cluster.ClusterClient)

    async def open(self, avoid: str | None = None) -> None:
        """Subscribe; in a cluster on a random node (``avoid`` only when no other answers).
        Raises what redis-py raised (the last node's failure, in a cluster)."""
        if not isinstance(self._client, cluster.ClusterClient):
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
            except BaseException:
                await pubsub.aclose()
                raise
            self._pubsub = pubsub
            return
        failure: BaseException | None = None
        for node in cluster.subscription_nodes(self._client, avoid):
            node_client = cluster.node_client(self._client, node)
            pubsub = node_client.pubsub()
            try:
                with translated():
                    await pubsub.subscribe(self._channel)
            except BackendUnavailable as error:
                failure = error.__cause__ or error
                await close_quietly(pubsub.aclose)
                await close_quietly(node_client.aclose)
                continue
            self._pubsub, self._node_client, self.node = pubsub, node_client, node.name
            return
        raise failure or ConnectionError("no cluster node to subscribe on")

    async def listen(self, on_message: Callable[[str], None], interval: float,
                     read_all: Callable[[], Awaitable[None]]) -> None:
        """Hand every message's data to ``on_message`` (waking every ``interval`` seconds) until the
        subscription fails; in a cluster it then moves to another node and calls ``read_all`` for
        what was published in between. Raises BackendUnavailable when Redis (or every node) is gone."""
        while True:
            try:
                with translated():
                    while True:
                        data = await self.message(interval)
                        if data is not None:
                            on_message(data)
            except BackendUnavailable as error:
                if not self.movable:
                    raise
                log.warning("breaker notifications from %s stopped (%s): subscribing on another node",
                            self.node, describe(error))
                with translated():
                    await self.move()
                    await read_all()

    async def message(self, timeout: float) -> str | None:
        """The next message's data, or None when none came within ``timeout`` seconds."""
        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        if message is not None and message["type"] == "message":
            return str(message["data"])
        return None

    async def move(self) -> None:
        """Close this node's subscription and subscribe on another node (cluster only)."""
        failed = self.node
        await self.close()
        await self.open(avoid=failed)

    async def close(self) -> None:
        """Never raises."""
        pubsub, self._pubsub = self._pubsub, None
        node_client, self._node_client = self._node_client, None
        if pubsub is not None:
            await close_quietly(pubsub.aclose)
        if node_client is not None:
            await close_quietly(node_client.aclose)
