"""A process that runs only the webhook delivery workers on a Redis store, for replica tests.

``python -m tests.webhook_worker REDIS_URL DELIVER_TO VISIBILITY`` delivers webhook ``twilio_status``
(concurrency 4, 8 attempts, fast backoff) until SIGTERM, then drains. It prints ``ready`` once
its workers run.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop

from proxy.config.webhooks import Backoff, Delivery, Webhook
from proxy.runtime.delivery import DeliveryWorkers
from proxy.state.redis.webhooks import RedisWebhookStore


def hook(deliver_to: str) -> Webhook:
    return Webhook(name="twilio_status", path="/hooks/twilio/status", deliver_to=deliver_to, provider="none",
                   delivery=Delivery(attempts=8, backoff=Backoff(0.1, 2.0, 0.5), timeout=30.0, concurrency=4))


async def main(redis_url: str, deliver_to: str, visibility: float) -> None:
    store = RedisWebhookStore(redis_url)
    await store.start()
    webhooks = (hook(deliver_to),)
    workers = DeliveryWorkers(store, lambda: webhooks, lambda event: None, visibility=visibility, poll_interval=0.1)
    await workers.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await workers.drain(1.0)
    await workers.close()
    await store.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
