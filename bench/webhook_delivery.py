"""Webhook delivery throughput and Redis commands per event, on one worker with Redis.

    python bench/webhook_delivery.py [--events 5000] [--concurrency 4,16,64] [--rounds 3]

Starts its own redis-server and nginx (``upstream.conf``: any path answers 200 at once: a fast
app) on free loopback ports. Per round and per concurrency, in turn (interleaved, so a burst of
outside load hits every setting alike): queue ``--events`` events with the store's ``accept``
(one EVALSHA each), then run one process's :class:`DeliveryWorkers` (this one, pinned to core 0;
Redis and nginx on core 1) until every event is completed. Prints accepted/s and delivered/s,
and from ``INFO commandstats`` the round trips (EVALSHA) and the commands Redis ran (the scripts'
own included) per event. Medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redisstats
import uvloop

from proxy.config.webhooks import Backoff, Delivery, Webhook
from proxy.events import WebhookSettled
from proxy.runtime.delivery import DeliveryWorkers
from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import InboundEvent

BODY = (b"AccountSid=AC00000000000000000000000000000000&MessageSid=SM00000000000000000000000000000000"
        b"&MessageStatus=delivered&To=%2B15550000000&From=%2B15551111111&ApiVersion=2010-04-01")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(cmd: list[str], log: Path, cpu: int) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_port(port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def event(key: str) -> InboundEvent:
    return InboundEvent(webhook="bench", dedupe_key=key, method="POST", query="",
                        headers=(("Content-Type", "application/x-www-form-urlencoded"),), body=BODY,
                        received_at=time.time(), org="AC0", event_type="delivered", verified="twilio")


def calls(port: int) -> dict[str, int]:
    return redisstats.parse_commandstats(redisstats.command(port, "INFO", "commandstats").decode())


def spent(before: dict[str, int], after: dict[str, int]) -> tuple[int, int]:
    """(EVALSHA, all commands) between two snapshots, the second snapshot's INFO not counted."""
    diff = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    diff["info"] = diff.get("info", 0) - 1
    return diff.get("evalsha", 0), sum(diff.values())


async def one(redis_port: int, app_port: int, events: int, concurrency: int, tag: str) -> dict[str, float]:
    url = f"redis://127.0.0.1:{redis_port}/0"
    redisstats.command(redis_port, "FLUSHALL")
    store = RedisWebhookStore(url, timeout=2.0)
    await store.start()
    hook = Webhook(name="bench", path="/hooks/bench", deliver_to=f"http://127.0.0.1:{app_port}/app",
                   provider="none", delivery=Delivery(attempts=8, backoff=Backoff(1.0, 2.0, 300.0), timeout=10.0,
                                                     concurrency=concurrency))
    before = calls(redis_port)
    started = time.perf_counter()
    for i in range(events):
        await store.accept(event(f"{tag}-{i}"), dedupe_window=86_400, log_retention=604_800)
    accept_seconds = time.perf_counter() - started
    middle = calls(redis_port)
    done = asyncio.Event()
    settled = 0

    def on_event(item: object) -> None:
        nonlocal settled
        if isinstance(item, WebhookSettled):
            settled += 1
            if settled == events:
                done.set()

    workers = DeliveryWorkers(store, lambda: (hook,), on_event, poll_interval=0.05)
    started = time.perf_counter()
    await workers.start()
    await asyncio.wait_for(done.wait(), timeout=600)
    deliver_seconds = time.perf_counter() - started
    after = calls(redis_port)
    await workers.close()
    await store.close()
    accept_evalsha, accept_commands = spent(before, middle)
    deliver_evalsha, deliver_commands = spent(middle, after)
    return {"accepted_per_s": events / accept_seconds, "delivered_per_s": events / deliver_seconds,
            "accept_evalsha": accept_evalsha / events, "accept_commands": accept_commands / events,
            "deliver_evalsha": deliver_evalsha / events, "deliver_commands": deliver_commands / events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", default="4,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = [int(c) for c in args.concurrency.split(",")]
    os.sched_setaffinity(0, {0})
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    redis_port, app_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(string.Template((Path(__file__).parent / "upstream.conf").read_text())
                    .substitute(prefix=tmp, port=app_port))
    redis = start([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no"], tmp / "redis.log", 1)
    nginx = start([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(tmp), "-e", "stderr",
                   "-g", "daemon off;"], tmp / "nginx.log", 1)
    try:
        wait_port(redis_port)
        wait_port(app_port)
        results: dict[int, list[dict[str, float]]] = {c: [] for c in settings}
        for round_ in range(args.rounds):
            for concurrency in settings:
                result = uvloop.run(one(redis_port, app_port, args.events, concurrency, f"r{round_}c{concurrency}"))
                results[concurrency].append(result)
                print(f"round {round_ + 1} concurrency {concurrency}: " +
                      ", ".join(f"{k} {v:.1f}" for k, v in result.items()), file=sys.stderr)
        print(f"{args.events} events, median of {args.rounds} rounds")
        print("| concurrency | accepted/s | delivered/s | EVALSHA per accept | commands per accept "
              "| EVALSHA per delivery | commands per delivery |")
        print("|---|---|---|---|---|---|---|")
        for concurrency, rows in results.items():
            m = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            print(f"| {concurrency} | {m['accepted_per_s']:.0f} | {m['delivered_per_s']:.0f} | "
                  f"{m['accept_evalsha']:.2f} | {m['accept_commands']:.1f} | {m['deliver_evalsha']:.2f} | "
                  f"{m['deliver_commands']:.1f} |")
    finally:
        for process in (nginx, redis):
            os.killpg(process.pid, 15)
            process.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
