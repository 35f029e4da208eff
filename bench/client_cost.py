"""What one upstream request costs in aiohttp's client, and what its settings change: CPU per request.

    python bench/client_cost.py                      # every variant, 5 interleaved rounds
    python bench/client_cost.py --variants sidecar,no-timers --rounds 9

Each variant is one ``ClientSession`` making GETs to a local nginx (bench/upstream.conf) from 32
concurrent tasks, body read whole, for ``--requests`` requests; the figure is this process's CPU time
(user + system, ``time.process_time``) per request, which a busy machine inflates far less than
wall-clock rates. The process is pinned to --proxy-cpu, nginx to --load-cpu. Variants run in turn in
each round, so outside load hits them alike; medians over rounds are printed with each variant's ratio
to ``sidecar`` (the settings :class:`proxy.web.forward.UpstreamClient` used before issue 16).

``upstream-client`` is this tree's :class:`proxy.web.forward.UpstreamClient` as the sidecar uses it
(its session, request class and shared deadlines).

``raw`` is no HTTP client at all: an asyncio Protocol that writes the request's bytes and counts
the answer's by Content-Length. It is the floor of the event loop and the sockets: what any Python
client on uvloop pays, and what aiohttp's client adds above it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import procs
import uvloop
from openloop import ResponseParser
from run import PATH, find_nginx, write_nginx_conf
from variants import VARIANTS as VARIANTS_BY_NAME
from variants import write_config
from yarl import URL

from proxy.config.load import load_config
from proxy.web.forward import UpstreamClient

SKIP = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
Fetch = Callable[[], Awaitable[int]]


def session_kwargs(**timeout: Any) -> dict[str, Any]:
    """The sidecar's session settings; ``timeout`` replaces its ClientTimeout fields. The cookie jar is
    a class, made inside the event loop."""
    fields = {"total": None, "sock_connect": 10.0, "sock_read": 30.0, **timeout}
    return {"cookie_jar": aiohttp.DummyCookieJar, "auto_decompress": False, "skip_auto_headers": SKIP,
            "timeout": aiohttp.ClientTimeout(**fields), "raise_for_status": False}


BEFORE = {"limit": 100, "ttl_dns_cache": 60, "enable_cleanup_closed": True}
"""The connector of the sidecar's upstream client before issue 16 (limit: max_connections' default)."""
# name -> (connector kwargs, session kwargs, the timeout around each request: "asyncio" or None)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], str | None]] = {
    "sidecar": (BEFORE, session_kwargs(), "asyncio"),
    "no-asyncio-timeout": (BEFORE, session_kwargs(), None),
    "no-sock-read": (BEFORE, session_kwargs(sock_read=None), "asyncio"),
    "no-timers": (BEFORE, session_kwargs(sock_read=None), None),
    "limit-0": ({**BEFORE, "limit": 0}, session_kwargs(), "asyncio"),
    "limit-per-host-32": ({**BEFORE, "limit_per_host": 32}, session_kwargs(), "asyncio"),
    "no-cleanup-closed": ({**BEFORE, "enable_cleanup_closed": False}, session_kwargs(), "asyncio"),
    "keepalive-75s": ({**BEFORE, "keepalive_timeout": 75}, session_kwargs(), "asyncio"),
    "read-bufsize-4k": (BEFORE, {**session_kwargs(), "read_bufsize": 4096}, "asyncio"),
    "force-close": ({**BEFORE, "force_close": True}, session_kwargs(), "asyncio"),
    "aiohttp-defaults": ({}, {}, None),
}
CURRENT = "upstream-client"
"""This tree's :class:`proxy.web.forward.UpstreamClient` (its session and its shared deadlines), as is."""


def current_client(port: int) -> UpstreamClient:
    """The sidecar's client for an upstream at ``port``, built from a config as the sidecar builds it."""
    with tempfile.TemporaryDirectory() as directory:
        conf = write_config(Path(directory), VARIANTS_BY_NAME["plain"], port=1, admin_port=2, upstream_port=port,
                            access_log=False)
        return UpstreamClient(load_config(str(conf)).upstreams[0])


class _RawConn(asyncio.Protocol):
    """One keep-alive connection for the ``raw`` variant: one request at a time."""

    def __init__(self) -> None:
        self.parser = ResponseParser()
        self.done: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for status, _ in self.parser.feed(data):
            if self.done is not None and not self.done.done():
                self.done.set_result(status)


async def raw_fetchers(port: int, concurrency: int) -> tuple[list[Fetch], Callable[[], None]]:
    """One fetch function per connection, and how to close them all."""
    loop = asyncio.get_running_loop()
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    conns = [(await loop.create_connection(_RawConn, "127.0.0.1", port))[1] for _ in range(concurrency)]

    def fetcher(conn: _RawConn) -> Fetch:
        async def fetch() -> int:
            conn.done = loop.create_future()
            assert conn.transport is not None
            conn.transport.write(request)
            return await conn.done

        return fetch

    def close() -> None:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()

    return [fetcher(c) for c in conns], close


async def measure(name: str, port: int, requests: int, concurrency: int) -> float:
    """CPU microseconds per request for one variant (after a warm-up of one request per task)."""
    url = URL(f"http://127.0.0.1:{port}{PATH}", encoded=True)
    close: Callable[[], Awaitable[None] | None]
    if name == "raw":
        fetchers, close = await raw_fetchers(port, concurrency)
    elif name == CURRENT:
        client = current_client(port)

        async def fetch() -> int:
            with client.deadlines.bound(30):
                response = await client.session.get(url, allow_redirects=False)
            await response.read()
            response.release()
            return response.status

        fetchers, close = [fetch] * concurrency, client.close
    else:
        connector_kw, session_kw, wrap = VARIANTS[name]
        session_kw = {k: v() if k == "cookie_jar" else v for k, v in session_kw.items()}
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(**connector_kw), **session_kw)
        session._retry_connection = False  # as the sidecar sets it

        async def fetch() -> int:
            if wrap:
                async with asyncio.timeout(30):
                    response = await session.get(url, allow_redirects=False)
            else:
                response = await session.get(url, allow_redirects=False)
            await response.read()
            response.release()
            return response.status

        fetchers, close = [fetch] * concurrency, session.close
    left = [requests]

    async def worker(fetch: Fetch) -> None:
        while left[0] > 0:
            left[0] -= 1
            if await fetch() != 200:
                raise RuntimeError(f"{name}: upstream answered non-200")

    await asyncio.gather(*(f() for f in fetchers))  # warm-up: every connection open
    started = time.process_time()
    await asyncio.gather(*(worker(f) for f in fetchers))
    spent = time.process_time() - started
    closing = close()
    if closing is not None:
        await closing
    return spent / requests * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(["raw", *VARIANTS, CURRENT]), help="comma-separated, in this order")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=10_000, help="per variant per round")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--upstream-port", type=int, default=18690)
    args = p.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in ("raw", CURRENT) and n not in VARIANTS]
    if unknown or not 1 <= args.rounds <= 20 or not 100 <= args.requests <= 1_000_000:
        p.error(f"unknown variants {unknown}" if unknown else "rounds 1-20, requests 100-1,000,000")
    if procs.port_in_use(args.upstream_port):
        sys.exit(f"port {args.upstream_port} is in use")
    tmp = Path(tempfile.mkdtemp(prefix="proxy-client-cost-"))
    tmp.chmod(0o755)
    nginx = procs.start("nginx", [find_nginx(), "-c", str(write_nginx_conf(tmp, args.upstream_port)), "-p", str(tmp),
                                  "-e", "stderr", "-g", "daemon off;"], args.load_cpu, tmp)
    try:
        procs.wait_ready(nginx, args.upstream_port, PATH)
        os.sched_setaffinity(0, {args.proxy_cpu})
        results: dict[str, list[float]] = {n: [] for n in names}

        async def rounds() -> None:
            for number in range(1, args.rounds + 1):
                line = []
                for name in names:
                    results[name].append(await measure(name, args.upstream_port, args.requests, args.concurrency))
                    line.append(f"{name} {results[name][-1]:.1f}")
                print(f"round {number} (load {os.getloadavg()[0]:.2f}): " + ", ".join(line), file=sys.stderr)

        uvloop.run(rounds())
    finally:
        procs.stop(nginx)
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(results["sidecar"]) if "sidecar" in results else None
    print(f"aiohttp {aiohttp.__version__}, uvloop {uvloop.__version__}; {args.concurrency} tasks, "
          f"{args.requests} requests per variant per round, median of {args.rounds} rounds")
    print(f"{'variant':<20} {'CPU us/request':>14} {'vs sidecar':>10}")
    for name in names:
        median = statistics.median(results[name])
        ratio = f"{median / base:.2f}x" if base else ""
        print(f"{name:<20} {median:>14.1f} {ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
