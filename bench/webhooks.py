"""Inbound webhooks on one sidecar worker with Redis: how many events it accepts, how fast the provider
gets its answer, how fast it delivers, and what each event costs Redis.

Every request is a Twilio status callback as Twilio sends it: a form POST with a unique ``MessageSid``
and ``I-Twilio-Idempotency-Token``, signed (``X-Twilio-Signature``) with the webhook's auth token over
its ``public_url``, so each one is verified, deduplicated and queued for real (never a duplicate).
The app is nginx answering 200 at once (bench/upstream.conf), so delivery measures the sidecar.

1. **accepted/s**: closed loop, ``--connections`` keep-alive connections sending back to back for
   ``--seconds``; delivery runs meanwhile in the same process (as in production). Each round first
   runs the same load as plain proxied POSTs through the data port to nginx: the machine's yardstick,
   so that ``accepted / proxied`` is a ratio from one interleaved run, whatever else the machine does.
2. **delivery/s**: the backlog left when the load stops, delivered with the listener idle.
3. **Redis per event**: ``INFO commandstats`` from before each accept phase to the end of its drain,
   over the events accepted: round trips (EVALSHA: accept, claim, settle) and every command the
   scripts ran; the background (queue sampling every 2 s, idle workers' polls, the runner's own
   ``GET /admin/webhooks`` polls) is included.
4. **provider-answer latency**: open loop (bench/openloop.py) at each ``--rates``, p50/p99 from the
   scheduled send time, so queueing behind a slow sidecar counts, next to a proxied POST at the same
   rate; the queue is drained between rates.

Pinning as in bench/run.py: the sidecar alone on ``--proxy-cpu``; nginx, Redis and the load on
``--load-cpu``. Every phase is bounded in time and in requests. Its ports (18300 nginx, 18390 data,
18391 webhooks, 19991 admin, 16399 Redis) differ from bench/run.py's, but run one bench at a time.

    python bench/webhooks.py            # about 3 minutes
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
import re
import shutil
import statistics
import sys
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
            "    breaker: false\n    retry: false\n"
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


_RECEIVED = re.compile(r'^resilience_proxy_webhooks_received_total\{([^}]*)\} (\S+)$', re.MULTILINE)
_RESULT = re.compile(r'result="([^"]*)"')


def received(admin_port: int) -> dict[str, int]:
    """The listener's answers so far by result (``resilience_proxy_webhooks_received_total``): whether
    the 2xx the load counted were queued (``accepted``) or forwarded without Redis (``passthrough``)."""
    counts: dict[str, int] = {}
    for labels, value in _RECEIVED.findall(procs.http_text(admin_port, "/metrics", timeout=5.0)):
        if f'webhook="{WEBHOOK}"' in labels and (result := _RESULT.search(labels)):
            counts[result.group(1)] = counts.get(result.group(1), 0) + round(float(value))
    return counts


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


def proxied_request(i: int, port: int) -> bytes:
    """The same form body POSTed through the data port to nginx, no policy: the yardstick for the ratios."""
    body = urlencode(status_callback(i)).encode()
    head = (f"POST /bench/app/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def one_round(args: argparse.Namespace, numbers: Iterator[int]) -> dict[str, Any]:
    """A proxied closed loop, then the webhook closed loop and the drain after it."""
    proxied = asyncio.run(closed_loop(args.data_port, (proxied_request(i, args.data_port) for i in numbers),
                                      args.connections, args.seconds))
    before_commands, before = redisstats.commandstats(args.redis_port), queue(args.admin_port)
    answers_before = received(args.admin_port)
    accept = asyncio.run(closed_loop(args.hooks_port, signed_requests(args.hooks_port, numbers), args.connections,
                                     args.seconds))
    at_stop, stopped = queue(args.admin_port), time.perf_counter()
    drained = wait_drained(args.admin_port)
    drain_seconds = time.perf_counter() - stopped
    delivered = drained["counts"]["completed"] - at_stop["counts"]["completed"]
    answers = received(args.admin_port)
    accept["by_result"] = {k: n - answers_before.get(k, 0) for k, n in answers.items() if n > answers_before.get(k, 0)}
    return {"proxied": proxied, "accept": accept, "backlog_at_stop": at_stop["depth"],
            "delivery": {"events": delivered, "seconds": round(drain_seconds, 3),
                         "per_second": round(delivered / drain_seconds, 1) if drain_seconds else None},
            "completed": drained["counts"]["completed"] - before["counts"]["completed"],
            "dead_letter": drained["counts"]["dead_letter"] - before["counts"]["dead_letter"],
            "commands": redisstats.delta(before_commands, redisstats.commandstats(args.redis_port))}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds; Redis commands summed over rounds, per event accepted."""
    def median(path: tuple[str, str]) -> float:
        return statistics.median(r[path[0]][path[1]] or 0.0 for r in rounds)

    # Per event stored: a 2xx without Redis (passthrough: the store timed out) cost no queue work.
    accepted = sum(r["accept"].get("by_result", {}).get("accepted", r["accept"]["accepted"]) for r in rounds) or 1
    passthrough = sum(r["accept"].get("by_result", {}).get("passthrough", 0) for r in rounds)
    commands: dict[str, int] = {}
    for r in rounds:
        for name, n in r["commands"].items():
            commands[name] = commands.get(name, 0) + n
    proxied, accept = median(("proxied", "per_second")), median(("accept", "per_second"))
    return {
        "proxied_per_second": proxied, "accepted_per_second": accept,
        "accepted_vs_proxied": round(accept / proxied, 3) if proxied else None,
        "not_2xx": sum(r["accept"]["other"] for r in rounds),
        "delivered_per_second": median(("delivery", "per_second")),
        "backlog_at_stop": statistics.median(r["backlog_at_stop"] for r in rounds),
        "completed": sum(r["completed"] for r in rounds), "dead_letter": sum(r["dead_letter"] for r in rounds),
        "accepted": accepted, "passthrough": passthrough,
        "redis": {"commands": commands, "per_event": {name: round(n / accepted, 2) for name, n in commands.items()},
                  "total_per_event": round(sum(commands.values()) / accepted, 2)},
    }


def measure(args: argparse.Namespace, numbers: Iterator[int]) -> dict[str, Any]:
    """Warm-up, ``--rounds`` interleaved rounds, then the open loop at each rate (proxied, then webhooks)."""
    asyncio.run(closed_loop(args.hooks_port, signed_requests(args.hooks_port, numbers), args.connections, 1.0))
    asyncio.run(closed_loop(args.data_port, (proxied_request(i, args.data_port) for i in numbers), args.connections,
                            1.0))
    wait_drained(args.admin_port)
    rounds = [one_round(args, numbers) for _ in range(args.rounds)]
    result = {"rounds": rounds, **summarize(rounds), "latency": {}}
    for rate in args.rates:
        total = int(rate * (args.warmup + args.openloop_seconds))
        proxied = asyncio.run(openloop.run(
            f"http://127.0.0.1:{args.data_port}/bench/app/status", rate, args.openloop_seconds, args.warmup,
            args.connections, 2.0,
            requests=(proxied_request(i, args.data_port) for i in itertools.islice(numbers, total))))
        answers = asyncio.run(openloop.run(
            f"http://127.0.0.1:{args.hooks_port}{PATH}", rate, args.openloop_seconds, args.warmup, args.connections,
            2.0, requests=signed_requests(args.hooks_port, itertools.islice(numbers, total))))
        result["latency"][str(int(rate))] = {"webhook": answers, "proxied": proxied}
        wait_drained(args.admin_port)
    return result


def markdown(result: dict[str, Any]) -> str:
    """The figures as the table in bench/README.md."""
    redis = result["redis"]
    per_event = ", ".join(f"{name} {n}" for name, n in sorted(redis["per_event"].items(), key=lambda kv: -kv[1]))
    lines = ["| measure | value |", "|---|---|",
             f"| answered 2xx, closed loop, delivering meanwhile | {result['accepted_per_second']:,.0f} events/s "
             f"({result['not_2xx']} not 2xx; {result['passthrough']:,} of {result['accepted'] + result['passthrough']:,} "
             "forwarded without Redis: passthrough) |",
             f"| proxied POST through the data port, same load (yardstick) | {result['proxied_per_second']:,.0f} req/s |",
             f"| accepted / proxied | {result['accepted_vs_proxied']} |",
             f"| delivered afterwards, listener idle (backlog {result['backlog_at_stop']:,.0f} events) | "
             f"{result['delivered_per_second']:,.0f} events/s |",
             f"| Redis round trips (EVALSHA) per event queued, accept to completed | {redis['per_event'].get('evalsha', 0)} |",
             f"| Redis commands per event, scripts' own included | {redis['total_per_event']} ({per_event}) |"]
    for rate, both in result["latency"].items():
        hook, proxied = both["webhook"]["latency_ms"], both["proxied"]["latency_ms"]
        lines.append(f"| provider answer at {rate}/s, open loop | p50 {hook['p50']} ms, p99 {hook['p99']} ms, "
                     f"max {hook['max']} ms; {both['webhook']['errors']} failed (proxied POST: p50 {proxied['p50']}, "
                     f"p99 {proxied['p99']} ms) |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 s phases, one rate")
    parser.add_argument("--seconds", type=float, default=8.0, help="each closed-loop phase")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of proxied and webhook loads")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rates", default="200,400", help="open-loop rates (events/s)")
    parser.add_argument("--openloop-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--app-port", type=int, default=18300, help="nginx, the app")
    parser.add_argument("--data-port", type=int, default=18390)
    parser.add_argument("--admin-port", type=int, default=19991)
    parser.add_argument("--hooks-port", type=int, default=18391)
    parser.add_argument("--redis-port", type=int, default=16399)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--out", help="also write the results as JSON")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.quick:
        args.seconds, args.rounds, args.openloop_seconds, args.warmup = 3.0, 1, 3.0, 1.0
        args.rates = args.rates[:1]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ports = (args.app_port, args.data_port, args.admin_port, args.hooks_port, args.redis_port)
    tmp = procs.prepare_runner(args, ports, "bench-webhooks-")
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
        result = measure(args, itertools.count())
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
