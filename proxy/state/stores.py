"""The configured backend's stores: embedded memory, or Redis shared by the fleet (``state:`` in config)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from proxy.config.model import StateSettings
from proxy.state.base import BreakerStore, LimitStore
from proxy.state.memory import MemoryBreakerStore
from proxy.state.memory_limits import MemoryLimitStore

if TYPE_CHECKING:
    from proxy.state.webhooks import DeliveryQueue

WEBHOOK_ACCEPT_TIMEOUT_MIN = 0.1
"""Floor of the wait for Redis on the webhook receive path: a timed-out accept that Redis did run is
delivered twice (queued, and forwarded by ``on_backend_error: passthrough``)."""


class Stores(NamedTuple):
    breakers: BreakerStore
    limits: LimitStore


def open_stores(settings: StateSettings) -> Stores:
    """Both stores of ``settings``' backend, not started yet (the owner starts and closes them)."""
    return Stores(breaker_store(settings), limit_store(settings))


def breaker_store(settings: StateSettings) -> BreakerStore:
    """Breakers in this process, or in Redis for the whole fleet."""
    if settings.backend == "redis":
        # Imported here so that a memory-only sidecar never loads redis-py (not to dodge a cycle).
        from proxy.state.redis.breakers import RedisBreakerStore

        return RedisBreakerStore(settings.redis_url, prefix=settings.key_prefix, timeout=settings.redis_timeout)
    return MemoryBreakerStore()


def limit_store(settings: StateSettings) -> LimitStore:
    """Rate-limit buckets in this process, or in Redis for the whole fleet."""
    if settings.backend == "redis":
        from proxy.state.redis.limits import RedisLimitStore

        return RedisLimitStore(settings.redis_url, prefix=settings.key_prefix, timeout=settings.redis_timeout)
    return MemoryLimitStore()


def webhook_store(settings: StateSettings) -> DeliveryQueue:
    """Inbound webhook events: durable in Redis, or a bounded queue in this process (lost on restart).

    Each backend's module is imported here: a sidecar without webhooks loads neither."""
    if settings.backend == "redis":
        from proxy.state.redis.webhooks import RedisWebhookStore

        return RedisWebhookStore(settings.redis_url, prefix=settings.key_prefix,
                                 timeout=max(settings.redis_timeout, WEBHOOK_ACCEPT_TIMEOUT_MIN))
    from proxy.state.memory_webhooks import MemoryWebhookStore

    return MemoryWebhookStore()
