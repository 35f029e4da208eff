"""Redis Cluster (``redis+cluster://``): the client, one auto-pipelining lane per master, and the
per-node commands (SCRIPT LOAD, PING) that a cluster needs where one Redis needs one round trip.

The client is redis-py's :class:`~redis.asyncio.cluster.RedisCluster`, created once per store from
the URL's seed nodes: it reads the slot map, sends each command to the master of its key's slot and
follows MOVED and ASK itself. It never retries (the stores decide what a failure means: the local
fallback), as the single-Redis client does not.

Two things differ from one Redis and are handled here:

- **Bounded connections.** redis-py's cluster pool opens connections up to ``max_connections`` per
  node and then raises MaxConnectionsError rather than waiting, which a burst would turn into an
  outage. :class:`ClusterClient` lets at most ``max_connections`` commands and pipelines be under
  way at once, so a burst queues for a connection as it does on the single Redis's blocking pool.
- **The rate limiter's lane.** One :class:`~proxy.state.redis.lane.Lane` per master
  (:class:`ClusterLanes`): a command goes to the lane of the master that serves its first key's
  slot, so every flush is one write per node. A MOVED or ASK reply (a slot that moved, a failover
  that demoted a master) is sent again through redis-py's client, which follows the redirection and
  updates the slot map the lanes read, so the next command goes to the right master at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AskError, TryAgainError

from proxy.config.redis_url import cluster_target
from proxy.state.redis.lane import Lane

T = TypeVar("T")

_GATED: contextvars.ContextVar[bool] = contextvars.ContextVar("resilience_proxy_cluster_gated", default=False)
"""True inside a gated call: redis-py's pipeline retries a MOVED command through the client, which
must not wait for a second permit (a full gate would then wait for itself)."""

SUBSCRIPTION_HEADROOM = 1
"""Connections per node beyond the gated commands: the breakers' subscription, when on that node."""


class ClusterClient(RedisCluster):
    """redis-py's cluster client with at most ``max_connections`` commands and pipelines under way."""

    def __init__(self, *, max_connections: int, node_settings: dict[str, Any], **settings: Any) -> None:
        super().__init__(max_connections=max_connections + SUBSCRIPTION_HEADROOM, **settings)
        self.gate = asyncio.Semaphore(max_connections)
        self.node_settings = node_settings
        """What a plain client of one node needs (timeouts, credentials, decoding): the subscription's."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await gated(self, lambda: super(ClusterClient, self).execute_command(*args, **kwargs))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises as redis-py does
        return _GatedPipeline(self, transaction)


class _GatedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, ClusterClient)
        return await gated(client, lambda: super(_GatedPipeline, self).execute(raise_on_error, allow_redirections))


async def gated(client: ClusterClient, call: Callable[[], Awaitable[T]]) -> T:
    if _GATED.get():
        return await call()
    async with client.gate:
        token = _GATED.set(True)
        try:
            return await call()
        finally:
            _GATED.reset(token)


def cluster_client(url: str, settings: dict[str, Any]) -> ClusterClient:
    """A client for the seed nodes of ``url``; it reads the slot map on its first command."""
    target = cluster_target(url)
    auth = {"username": target.username, "password": target.password}
    node_settings = {"socket_timeout": settings["socket_timeout"],
                     "socket_connect_timeout": settings["socket_connect_timeout"],
                     "decode_responses": settings["decode_responses"], **auth}
    return ClusterClient(startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                         max_connections=settings["max_connections"], node_settings=node_settings,
                         retry=Retry(NoBackoff(), 0), **node_settings)


async def reset(client: RedisCluster) -> None:
    """Close every connection and read the slot map again; raises unless every slot is served and
    every master answers a PING (a failover under way: its slots are not, or its old master is listed)."""
    await client.aclose()
    await client.initialize()
    await client.ping(target_nodes=RedisCluster.PRIMARIES)


def masters_of(client: RedisCluster, keys: Iterable[str]) -> list[ClusterNode]:
    """The masters serving ``keys``' slots (each once), as the client's slot map says now."""
    found: dict[str, ClusterNode] = {}
    for key in keys:
        node = client.get_node_from_key(key)
        if node is not None:
            found[node.name] = node
    return list(found.values())


async def ping(client: RedisCluster, keys: Sequence[str]) -> None:
    """PING the masters that serve ``keys`` (every master when none is given)."""
    nodes = masters_of(client, keys) if keys else RedisCluster.PRIMARIES
    await client.ping(target_nodes=nodes)


async def load_scripts(client: RedisCluster, texts: Sequence[str], near: Sequence[str] = ()) -> None:
    """SCRIPT LOAD ``texts`` on the masters serving ``near``'s keys (a master that answered NOSCRIPT:
    a promoted replica, a restarted node), or on every master when ``near`` is empty."""
    async def load(node: ClusterNode) -> None:  # one connection per node, rather than one per script
        for text in texts:
            await client.execute_command("SCRIPT LOAD", text, target_nodes=node)

    await asyncio.gather(*(load(node) for node in (masters_of(client, near) if near else client.get_primaries())))


def subscription_nodes(client: RedisCluster, avoid: str | None = None) -> list[ClusterNode]:
    """Every node (masters and replicas) in random order, ``avoid`` last: a PUBLISH reaches every node of
    a cluster, so any node serves the subscription, and a random one spreads a fleet's subscribers."""
    nodes = client.get_nodes()
    random.shuffle(nodes)
    return sorted(nodes, key=lambda node: node.name == avoid)


def node_client(client: ClusterClient, node: ClusterNode) -> aioredis.Redis:
    """A plain client of one node, with the cluster client's timeouts and credentials."""
    return aioredis.Redis(host=node.host, port=int(node.port), retry=Retry(NoBackoff(), 0), **client.node_settings)


@dataclass
class _NodeConnections:
    """What :class:`Lane` reads from a pool: how to make a connection to one node."""

    connection_class: type
    connection_kwargs: dict[str, Any] = field(default_factory=dict)


class ClusterLanes:
    """One :class:`Lane` per master, made on first use; a command goes to its first key's master."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._lanes: dict[str, Lane] = {}

    async def execute(self, *command: Any) -> Any:
        """Send a keyed command (``EVALSHA sha numkeys key ...``) on its master's lane; a redirection
        goes through redis-py's client, which follows it and updates the slot map."""
        try:
            return await self._lane(command[3]).execute(*command)
        except (AskError, TryAgainError):
            return await self._client.execute_command(*command)

    async def ping_for(self, key: str) -> Any:
        """PING on the lane of ``key``'s master: does the node that serves it answer?"""
        return await self._lane(key).execute("PING")

    async def connect(self) -> None:
        """Open a lane to every master now rather than with its first command."""
        await asyncio.gather(*(self._node_lane(node).connect() for node in self._client.get_primaries()))

    async def close(self) -> None:
        lanes, self._lanes = list(self._lanes.values()), {}
        await asyncio.gather(*(lane.close() for lane in lanes), return_exceptions=True)

    def _lane(self, key: str) -> Lane:
        node = self._client.get_node_from_key(key)
        assert node is not None  # get_node_from_key raises SlotNotCoveredError instead
        return self._node_lane(node)

    def _node_lane(self, node: ClusterNode) -> Lane:
        lane = self._lanes.get(node.name)
        if lane is None:
            kwargs = {**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
            lane = self._lanes[node.name] = Lane(_NodeConnections(node.connection_class, kwargs))
        return lane
