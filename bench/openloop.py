"""Open-loop (fixed-rate) HTTP/1.1 load generator that does not suffer from coordinated omission.

Request i is due at t0 + i/rate whatever happened to earlier requests; its latency is measured from
that *scheduled* time, so time spent waiting for a free connection (the server falling behind) is
counted, as a real client population would feel it. wrk measures from the actual send and hides it.

Dispatch is driven by an interval timer (SIGALRM via setitimer, microsecond resolution) because the
event loop's own timers have 1 ms resolution, which would add up to 1 ms of dispatch lag to every
sample at 2,000 req/s. The send lag (actual send - scheduled) is reported so the generator's own error
is visible.

    python bench/openloop.py http://127.0.0.1:18081/bench/x --rate 2000 --duration 10 --json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import uvloop

DEFAULT_URL = "http://127.0.0.1:18081/bench/2010-04-01/Accounts/AC123/Messages.json?PageSize=20"

_CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*(\d+)")
_CHUNKED = re.compile(rb"\ntransfer-encoding:[^\n]*chunked")
_CLOSE = re.compile(rb"\nconnection:[^\n]*close")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\r\n]*")


class ResponseParser:
    """Incremental HTTP/1.1 response framing: just enough to know where each response ends.

    Bodies are delimited by Content-Length or chunked encoding; a response with neither
    (read-until-close) is rejected because it cannot be reused on a keep-alive connection.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_body = False
        self._status = 0
        self._length = 0
        self._chunked = False
        self._close = False

    def feed(self, data: bytes) -> list[tuple[int, bool]]:
        """Consume bytes; return (status, server_closes) for every response completed by them."""
        self._buf += data
        done: list[tuple[int, bool]] = []
        while True:
            if not self._in_body:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    return done
                head = bytes(self._buf[:end]).lower()
                del self._buf[: end + 4]
                self._parse_head(head)
            if self._chunked:
                if not self._eat_chunks():
                    return done
            elif len(self._buf) >= self._length:
                del self._buf[: self._length]
            else:
                return done
            self._in_body = False
            if self._status >= 200:  # 1xx are interim: the real response follows
                done.append((self._status, self._close))

    def _parse_head(self, head: bytes) -> None:
        if not head.startswith(b"http/1."):
            raise ValueError(f"bad status line: {head[:40]!r}")
        self._status = int(head[9:12])
        self._chunked = _CHUNKED.search(head) is not None
        self._close = _CLOSE.search(head) is not None or head.startswith(b"http/1.0")
        match = _CONTENT_LENGTH.search(head)
        bodiless = self._status < 200 or self._status in (204, 304)
        if match is None and not self._chunked and not bodiless:
            raise ValueError("response without Content-Length or chunked encoding")
        self._length = 0 if bodiless or match is None else int(match.group(1))
        self._in_body = True

    def _eat_chunks(self) -> bool:
        """Drop complete chunks from the buffer; True once the terminating chunk was seen."""
        while True:
            line_end = self._buf.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(self._buf[:line_end]).split(b";")[0], 16)
            if size == 0:  # last chunk, then optional trailer lines and a blank line
                if self._buf[line_end + 2 : line_end + 4] == b"\r\n":
                    end = line_end + 4
                else:
                    end = self._buf.find(b"\r\n\r\n", line_end + 2) + 4
                    if end < 4:
                        return False
                del self._buf[:end]
                return True
            total = line_end + 2 + size + 2
            if len(self._buf) < total:
                return False
            del self._buf[:total]


@dataclass
class Tally:
    """Outcomes of the requests scheduled inside the measured window."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    non_2xx: int = 0
    timeouts: int = 0
    conn_errors: int = 0
    last_done: float = 0.0


class Conn(asyncio.Protocol):
    """One keep-alive connection carrying at most one request at a time."""

    def __init__(self, gen: OpenLoop) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.sched: float | None = None  # scheduled time of the request in flight
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's class is not a subclass
        self.gen.release(self)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()  # stamp before parsing: parsing cost is ours, not the server's
        try:
            done = self.parser.feed(data)
        except ValueError as exc:
            print(f"openloop: {exc}", file=sys.stderr)
            self.abort()
            return
        for status, closes in done:
            sched, self.sched = self.sched, None
            if sched is not None:
                self.gen.record(sched, now, status)
            if closes:
                self.abort()
                return
            self.gen.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)

    def abort(self) -> None:
        """Drop the connection now; connection_lost does the bookkeeping."""
        if self.transport is not None:
            self.transport.abort()


class OpenLoop:
    """Connection pool plus a FIFO of due requests waiting for a free connection."""

    def __init__(self, host: str, port: int, request: bytes, timeout: float, measure_from: float) -> None:
        self.host, self.port, self.request = host, port, request
        self.timeout = timeout
        self.measure_from = measure_from
        self.idle: list[Conn] = []
        self.busy: set[Conn] = set()
        self.waiting: deque[float] = deque()
        self.tally = Tally()
        self.requests: Iterator[bytes] | None = None
        """When set, each request sent is the next of these (unique events: bench/webhooks.py)."""
        self.closing = False
        self._reconnects: set[asyncio.Task[bool]] = set()  # strong refs: the loop only keeps weak ones

    async def connect(self) -> bool:
        """Open one connection, retrying briefly: a dropped connection is replaced, not lost."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            if self.closing:
                return False
            try:
                await loop.create_connection(lambda: Conn(self), self.host, self.port)
                return True
            except OSError:
                await asyncio.sleep(0.05)
        return False

    def submit(self, sched: float) -> None:
        """A request became due: send it now or queue it (queueing time counts as latency)."""
        if self.idle:
            self._send(self.idle.pop(), sched)
        else:
            self.waiting.append(sched)

    def release(self, conn: Conn) -> None:
        """A connection became free: give it the oldest waiting request, if any."""
        self.busy.discard(conn)
        if self.waiting:
            self._send(conn, self.waiting.popleft())
        else:
            self.idle.append(conn)

    def _send(self, conn: Conn, sched: float) -> None:
        conn.sched = sched
        conn.sent = time.perf_counter()
        self.busy.add(conn)
        assert conn.transport is not None
        conn.transport.write(self.request if self.requests is None else next(self.requests))
        if sched >= self.measure_from:
            self.tally.lags.append(conn.sent - sched)

    def record(self, sched: float, now: float, status: int) -> None:
        """Book one completed response."""
        if sched < self.measure_from:
            return
        if 200 <= status < 300:
            self.tally.latencies.append(now - sched)
        else:
            self.tally.non_2xx += 1
        self.tally.last_done = now

    def lost(self, conn: Conn) -> None:
        """Connection closed: fail its request and open a replacement."""
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.sched is not None and conn.sched >= self.measure_from:
            self.tally.conn_errors += 1
        conn.sched = None
        if not self.closing:
            task = asyncio.get_running_loop().create_task(self.connect())
            self._reconnects.add(task)
            task.add_done_callback(self._reconnects.discard)

    def expire(self, now: float) -> None:
        """Time out requests in flight or waiting longer than the per-request timeout."""
        for conn in [c for c in self.busy if now - c.sent > self.timeout]:
            if conn.sched is not None and conn.sched >= self.measure_from:
                self.tally.timeouts += 1
            conn.sched = None
            conn.abort()
        while self.waiting and now - self.waiting[0] > self.timeout:
            if self.waiting.popleft() >= self.measure_from:
                self.tally.timeouts += 1

    def pending(self) -> int:
        return len(self.busy) + len(self.waiting)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def run(
    url: str, rate: float, duration: float, warmup: float, conns: int, timeout: float, headers: tuple[str, ...] = (),
    requests: Iterator[bytes] | None = None,
) -> dict[str, object]:
    """Drive `url` at `rate` req/s for warmup + duration seconds; return stats for the measured part.

    ``headers`` are extra ``Name: value`` lines sent with every request. ``requests``: whole requests
    to send instead of a GET of ``url`` (one per request, at least ``rate * (warmup + duration)``).
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("openloop: only http:// loopback targets are allowed")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{h}\r\n" for h in headers)
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: openloop\r\nAccept: */*\r\n{extra}\r\n"
    ).encode()

    total = int(rate * (warmup + duration))  # hard cap on the number of requests
    loop = asyncio.get_running_loop()
    gen = OpenLoop(parts.hostname, port, request, timeout, measure_from=math.inf)
    gen.requests = requests
    if not all(await asyncio.gather(*(gen.connect() for _ in range(conns)))):
        raise SystemExit(f"openloop: cannot open {conns} connections to {parts.netloc}")

    interval = 1.0 / rate
    t0 = time.perf_counter() + 0.01
    gen.measure_from = t0 + warmup
    finished = loop.create_future()
    state = {"next": 0}

    def tick() -> None:
        # Dispatch every request now due; a few µs early is fine (timer and clock are not phase-locked).
        now = time.perf_counter() + 20e-6
        i = state["next"]
        while i < total and t0 + i * interval <= now:
            gen.submit(t0 + i * interval)
            i += 1
        state["next"] = i
        gen.expire(now)
        if i >= total and not finished.done():
            finished.set_result(None)

    loop.add_signal_handler(signal.SIGALRM, tick)
    # Never tick faster than every 100 µs; at higher rates each tick sends a small batch.
    signal.setitimer(signal.ITIMER_REAL, max(t0 - time.perf_counter(), 1e-6), max(interval, 1e-4))
    gc.disable()  # the generator's own collector pauses must not show up as server latency
    try:
        await asyncio.wait_for(finished, timeout=warmup + duration + 5.0)
        end = t0 + total * interval
        deadline = time.perf_counter() + timeout
        while gen.pending() and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
    finally:
        gc.enable()
        signal.setitimer(signal.ITIMER_REAL, 0)
        loop.remove_signal_handler(signal.SIGALRM)
    gen.closing = True  # before aborting: lost connections must not be replaced now
    gen.expire(math.inf)  # anything still unanswered is a timeout
    for conn in gen.idle + list(gen.busy):
        conn.abort()
    return summarize(gen.tally, rate, duration, gen.measure_from, end)


def summarize(tally: Tally, rate: float, duration: float, start: float, end: float) -> dict[str, object]:
    """Turn raw samples into milliseconds and rates."""
    lat = sorted(tally.latencies)
    lags = sorted(tally.lags)
    span = max(tally.last_done, end) - start
    ms = {
        f"p{k}": round(percentile(lat, q) * 1e3, 3)
        for k, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))
    }
    ms["max"] = round(lat[-1] * 1e3, 3) if lat else 0.0
    return {
        "target_rate": rate,
        "duration_s": duration,
        "ok": len(lat),
        "achieved_rate": round(len(lat) / span, 1) if span > 0 else 0.0,
        "errors": tally.non_2xx + tally.timeouts + tally.conn_errors,
        "non_2xx": tally.non_2xx,
        "timeouts": tally.timeouts,
        "conn_errors": tally.conn_errors,
        "latency_ms": ms,
        "send_lag_ms": {"p50": round(percentile(lags, 0.5) * 1e3, 3), "p99": round(percentile(lags, 0.99) * 1e3, 3)},
    }


def human(result: dict[str, object]) -> str:
    """One line for people."""
    ms = result["latency_ms"]
    lag = result["send_lag_ms"]
    assert isinstance(ms, dict) and isinstance(lag, dict)
    return (
        f"rate {result['achieved_rate']}/{result['target_rate']} req/s  ok {result['ok']}  errors {result['errors']}  "
        f"p50 {ms['p50']}  p90 {ms['p90']}  p99 {ms['p99']}  p99.9 {ms['p99.9']}  max {ms['max']} ms  "
        f"(send lag p50 {lag['p50']} p99 {lag['p99']} ms)"
    )


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL)
    parser.add_argument("--rate", type=float, default=2000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (after warm-up)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent but excluded from stats")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections in the pool")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a human line")
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header (repeatable)")
    args = parser.parse_args()
    if not (0 < args.rate <= 50_000 and 0 < args.duration <= 600 and 0 <= args.warmup <= 60):
        parser.error("rate must be in (0, 50000], duration in (0, 600], warmup in [0, 60]")
    if any(not _HEADER.fullmatch(h) for h in args.header):
        parser.error("--header takes 'Name: value' (a token, a colon, no CR or LF)")
    result = uvloop.run(
        run(args.url, args.rate, args.duration, args.warmup, args.connections, args.timeout, tuple(args.header))
    )
    print(json.dumps(result) if args.json else human(result))


if __name__ == "__main__":
    main()
