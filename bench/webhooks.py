"""Inbound webhooks on one sidecar worker with Redis: how many events it accepts, how fast the provider
gets its answer, how fast it delivers, and what each event costs Redis.

Every request is a Twilio status callback as Twilio sends it: a form POST with a unique ``MessageSid``
and ``I-Twilio-Idempotency-Token``, signed (``X-Twilio-Signature``) with the webhook's auth token over
its ``public_url``, so each one is verified, deduplicated and queued for real (never a duplicate).
The app is nginx answering 200 at once (bench/upstream.conf), so delivery measures the sidecar.

1. **accepted/s**: closed loop, ``--connections`` keep-alive connections sending back to back for
   ``--seconds``; delivery runs meanwhile in the same process (as in production).
2. **delivery/s**: the backlog left when the load stops, delivered with the listener idle.
3. **Redis commands per event**: ``INFO commandstats`` from before phase 1 to the end of phase 2,
   over the events accepted: accept, claim and settle, plus the background (queue sampling every 2 s,
   idle workers' polls).
4. **provider-answer latency**: open loop (bench/openloop.py) at each ``--rates``, p50/p99 from the
   scheduled send time, so queueing behind a slow sidecar counts; the queue is drained between rates.

Pinning as in bench/run.py: the sidecar alone on ``--proxy-cpu``; nginx, Redis and the load on
``--load-cpu``. Every phase is bounded in time and in requests.

    python bench/webhooks.py            # about 1 minute
    python bench/webhooks.py --quick    # about 20 seconds
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import openloop
import procs
import redisstats
import run

WEBHOOK = "bench_status"
PATH = "/hooks/twilio/status"
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
"""Made up, the shape of a Twilio auth token (32 hex)."""
ACCOUNT = "AC" + "0" * 32
STATUSES = ("queued", "sent", "delivered", "undelivered")


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature``: base64 HMAC-SHA1 over the URL and every parameter sorted by name."""
    data = url + "".join(name + value for name, value in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def status_callback(i: int) -> list[tuple[str, str]]:
    """The form fields of one message status callback (made-up numbers), unique by ``MessageSid``."""
    status = STATUSES[i % len(STATUSES)]
    return [("AccountSid", ACCOUNT), ("ApiVersion", "2010-04-01"), ("From", "+15005550006"),
            ("MessageSid", f"SM{i:032x}"), ("MessageStatus", status), ("SmsSid", f"SM{i:032x}"),
            ("SmsStatus", status), ("To", "+15005550009")]


def signed_request(i: int, port: int) -> bytes:
    """Request ``i`` to the webhooks listener on 127.0.0.1:``port``, signed over the URL Twilio would call."""
    url = f"http://127.0.0.1:{port}{PATH}"
    params = status_callback(i)
    body = urlencode(params).encode()
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: TwilioProxy/1.1\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
            f"X-Twilio-Signature: {signature(AUTH_TOKEN, url, params)}\r\n"
            f"I-Twilio-Idempotency-Token: bench-{i}\r\n\r\n")
    return head.encode() + body


def signed_requests(port: int, numbers: Iterator[int]) -> Iterator[bytes]:
    """Unique signed requests, built as they are sent (one HMAC each: a few microseconds)."""
    return (signed_request(i, port) for i in numbers)


def policy_yaml(hooks_port: int, app_port: int) -> str:
    return (f"upstreams:\n  bench:\n    url: http://127.0.0.1:{app_port}\n    prefix: /bench\n"
            f"webhooks:\n  {WEBHOOK}:\n    path: {PATH}\n    deliver_to: http://127.0.0.1:{app_port}/app/status\n"
            f"    provider: twilio\n    twilio:\n      auth_token: {AUTH_TOKEN}\n"
            f"      public_url: http://127.0.0.1:{hooks_port}{PATH}\n")


def main_yaml(data_port: int, admin_port: int, hooks_port: int, redis_port: int) -> str:
    return (f"listen: 127.0.0.1:{data_port}\nadmin:\n  listen: 127.0.0.1:{admin_port}\n"
            f"state:\n  backend: redis\n  redis_url: redis://127.0.0.1:{redis_port}/0\n"
            f"webhooks:\n  listen: 127.0.0.1:{hooks_port}\n"
            "log:\n  level: warning\n  access: false\npolicies: [policies/]\n")


def write_config(confdir: Path, *, data_port: int, admin_port: int, hooks_port: int, app_port: int,
                 redis_port: int) -> Path:
    (confdir / "policies").mkdir(parents=True, exist_ok=True)
    (confdir / "policies" / "bench.yaml").write_text(policy_yaml(hooks_port, app_port))
    conf = confdir / "sidecar.yaml"
    conf.write_text(main_yaml(data_port, admin_port, hooks_port, redis_port))
    return conf


class _Conn(asyncio.Protocol):
    def __init__(self, load: ClosedLoop) -> None:
        self.load, self.parser = load, openloop.ResponseParser()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.load.send(self)

    def data_received(self, data: bytes) -> None:
        for status, _ in self.parser.feed(data):
            self.load.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.closed(self)


class ClosedLoop:
    """``conns`` connections, each sending its next request as soon as the last is answered, until
    ``seconds`` have passed or ``cap`` requests were sent."""

    def __init__(self, requests: Iterator[bytes], seconds: float, cap: int) -> None:
        self.requests, self.cap = requests, cap
        self.end = time.perf_counter() + seconds
        self.sent = self.ok = self.other = 0
        self.open: set[_Conn] = set()
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def send(self, conn: _Conn) -> None:
        assert conn.transport is not None
        self.open.add(conn)
        if time.perf_counter() < self.end and self.sent < self.cap:
            self.sent += 1
            conn.transport.write(next(self.requests))
        else:
            conn.transport.close()

    def answered(self, conn: _Conn, status: int) -> None:
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.other += 1
        self.send(conn)

    def closed(self, conn: _Conn) -> None:
        self.open.discard(conn)
        if not self.open and not self.finished.done():
            self.finished.set_result(None)


async def closed_loop(port: int, requests: Iterator[bytes], conns: int, seconds: float,
                      cap: int = 200_000) -> dict[str, Any]:
    """Accepted events per second over ``seconds`` (every answer counted; a non-2xx is not accepted)."""
    load = ClosedLoop(requests, seconds, cap)
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    for _ in range(conns):
        await loop.create_connection(lambda: _Conn(load), "127.0.0.1", port)
    try:
        await asyncio.wait_for(load.finished, seconds + 10.0)
    except TimeoutError:
        for conn in list(load.open):
            if conn.transport is not None:
                conn.transport.abort()
    took = time.perf_counter() - start
    return {"accepted": load.ok, "other": load.other, "seconds": round(took, 3),
            "per_second": round(load.ok / took, 1)}


def queue(admin_port: int) -> dict[str, Any]:
    """The webhook's line of GET /admin/webhooks: counts by status, depth, oldest pending age."""
    [line] = [w for w in json.loads(procs.http_text(admin_port, "/admin/webhooks", timeout=5.0))["webhooks"]
              if w["name"] == WEBHOOK]
    return line


def wait_drained(admin_port: int, deadline: float = 180.0) -> dict[str, Any]:
    """Poll until nothing waits; the queue then."""
    end = time.monotonic() + deadline
    while True:
        line = queue(admin_port)
        if line["depth"] == 0 or time.monotonic() > end:
            return line
        time.sleep(0.1)


def measure(args: argparse.Namespace, admin_port: int, numbers: Iterator[int]) -> dict[str, Any]:
    requests = signed_requests(args.hooks_port, numbers)
    asyncio.run(closed_loop(args.hooks_port, requests, args.connections, 1.0))  # warm-up
    wait_drained(admin_port)
    before_commands, before = redisstats.commandstats(args.redis_port), queue(admin_port)
    accept = asyncio.run(closed_loop(args.hooks_port, requests, args.connections, args.seconds))
    at_stop, stopped = queue(admin_port), time.perf_counter()
    drained = wait_drained(admin_port)
    drain_seconds = time.perf_counter() - stopped
    commands = redisstats.delta(before_commands, redisstats.commandstats(args.redis_port))
    delivered = drained["counts"]["completed"] - at_stop["counts"]["completed"]
    result: dict[str, Any] = {
        "accept": accept,
        "backlog_at_stop": at_stop["depth"],
        "delivery": {"events": delivered, "seconds": round(drain_seconds, 3),
                     "per_second": round(delivered / drain_seconds, 1) if drain_seconds else None},
        "completed": drained["counts"]["completed"] - before["counts"]["completed"],
        "dead_letter": drained["counts"]["dead_letter"] - before["counts"]["dead_letter"],
        "redis": {"commands": commands, "per_event": {name: round(n / max(accept["accepted"], 1), 2)
                                                      for name, n in commands.items()},
                  "total_per_event": round(sum(commands.values()) / max(accept["accepted"], 1), 2)},
        "latency": {},
    }
    for rate in args.rates:
        total = int(rate * (args.warmup + args.openloop_seconds))
        answers = asyncio.run(openloop.run(f"http://127.0.0.1:{args.hooks_port}{PATH}", rate, args.openloop_seconds,
                                           args.warmup, args.connections, 2.0,
                                           requests=signed_requests(args.hooks_port, itertools.islice(numbers, total))))
        result["latency"][str(int(rate))] = answers
        wait_drained(admin_port)
    return result


def markdown(result: dict[str, Any]) -> str:
    """The figures as the table in bench/README.md."""
    accept, delivery, redis = result["accept"], result["delivery"], result["redis"]
    per_event = ", ".join(f"{name} {n}" for name, n in redis["per_event"].items())
    delivered = (f"{delivery['per_second']:,.0f} events/s ({delivery['events']:,} events)"
                 if delivery["per_second"] else "-")
    lines = ["| measure | value |", "|---|---|",
             f"| accepted, closed loop {accept['seconds']:.0f} s, delivering meanwhile | "
             f"{accept['per_second']:,.0f} events/s ({accept['other']} not 2xx) |",
             f"| delivered afterwards, listener idle | {delivered} |",
             f"| Redis commands per event, accept to completed | {redis['total_per_event']} ({per_event}) |"]
    for rate, answers in result["latency"].items():
        ms = answers["latency_ms"]
        lines.append(f"| provider answer at {rate}/s, open loop | p50 {ms['p50']} ms, p99 {ms['p99']} ms, "
                     f"max {ms['max']} ms; {answers['errors']} failed |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s phases, one rate")
    parser.add_argument("--seconds", type=float, default=10.0, help="closed-loop accept phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rates", default="500,1000", help="open-loop rates (events/s)")
    parser.add_argument("--openloop-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--app-port", type=int, default=18000, help="nginx, the app")
    parser.add_argument("--data-port", type=int, default=18080)
    parser.add_argument("--admin-port", type=int, default=19901)
    parser.add_argument("--hooks-port", type=int, default=18181)
    parser.add_argument("--redis-port", type=int, default=16379)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--out", help="also write the results as JSON")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.quick:
        args.seconds, args.openloop_seconds, args.warmup, args.rates = 3.0, 3.0, 1.0, args.rates[:1]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally block reaps the children
    if (os.cpu_count() or 1) < 2:
        args.proxy_cpu = args.load_cpu = 0
    os.sched_setaffinity(0, {args.load_cpu})  # the load generator stays off the sidecar's core
    ports = (args.app_port, args.data_port, args.admin_port, args.hooks_port, args.redis_port)
    busy = [p for p in ports if procs.port_in_use(p)]
    if busy:
        sys.exit(f"ports already in use: {busy}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    services: list[procs.Service] = []
    try:
        nginx = run.find_nginx()
        conf = run.write_nginx_conf(tmp, args.app_port)
        services.append(procs.start("nginx", [nginx, "-c", str(conf), "-p", str(tmp), "-e", "stderr", "-g",
                                              "daemon off;"], args.load_cpu, tmp))
        procs.wait_ready(services[-1], args.app_port, "/app/status")
        services.append(procs.start("redis", [args.redis_server, "--port", str(args.redis_port), "--bind",
                                              "127.0.0.1", "--save", "", "--appendonly", "no"],
                                    args.load_cpu, tmp, cwd=tmp))
        procs.wait_redis(services[-1], args.redis_port)
        config = write_config(tmp / "sidecar", data_port=args.data_port, admin_port=args.admin_port,
                              hooks_port=args.hooks_port, app_port=args.app_port, redis_port=args.redis_port)
        services.append(procs.start("sidecar", [args.python, "-m", "proxy", "run", "--config", str(config)],
                                    args.proxy_cpu, tmp, cwd=run.REPO_DIR))
        procs.wait_ready(services[-1], args.admin_port, "/readyz")
        result = measure(args, args.admin_port, itertools.count())
        result["args"] = {k: v for k, v in vars(args).items() if k not in ("python", "redis_server")}
        print(markdown(result))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        for service in reversed(services):
            procs.stop(service)
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
