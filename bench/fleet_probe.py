"""What the fleet bench measures by talking HTTP to the sidecars: how fast an opened breaker reaches the
other replicas, and how many requests a shared limit lets through when every replica is hammered.

Both watch behaviour, not admin reads: ``GET /admin/breakers`` asks Redis afresh, so it would show a
breaker open at once on every replica, while the data path decides from each replica's local view
(pub/sub, refreshed every second). Raw HTTP/1.1 on keep-alive connections (bench/openloop.py's
parser), so the runner needs nothing installed and a probe costs one loopback round trip.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from openloop import ResponseParser


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port, one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.parser = ResponseParser()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: Sequence[tuple[str, str]] = (),
                      timeout: float = 5.0) -> int:
        """Send one request (no body) and return the response's status."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Content-Length: 0",
                 *(f"{name}: {value}" for name, value in headers)]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError(f"127.0.0.1:{self.port} closed the connection")
                answers = self.parser.feed(data)
                if answers:
                    status, closes = answers[0]
                    if closes:
                        await self.close()
                    return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = self.reader = None


async def until_status(conn: Connection, path: str, want: int, deadline: float) -> float | None:
    """GET ``path`` back to back until it answers ``want``; the perf_counter time that answer arrived
    (an upper bound on when the replica changed its mind, one round trip at most late), None past
    ``deadline`` seconds."""
    end = time.perf_counter() + deadline
    while time.perf_counter() < end:
        if await conn.request("GET", path) == want:
            return time.perf_counter()
    return None


@dataclass
class Propagation:
    """Milliseconds from the admin POST on the first replica to each other replica answering as it says."""

    opened: list[float] = field(default_factory=list)
    closed: list[float] = field(default_factory=list)
    missed: int = 0
    """Replica-rounds that never showed the change within the deadline."""


async def propagation(admin_port: int, breaker: str, token: str, data_ports: Sequence[int], path: str,
                      repeats: int, deadline: float = 5.0) -> Propagation:
    """``repeats`` times: force-open ``breaker`` (``upstream/route``) on the replica whose admin port is
    ``admin_port``, time until every replica on ``data_ports`` answers ``path`` with the open breaker's
    503, then reset it and time until each answers 200 again."""
    auth = [("Authorization", f"Bearer {token}")]
    admin = Connection(admin_port)
    watchers = [Connection(port) for port in data_ports]
    result = Propagation()
    try:
        for _ in range(repeats):
            for action, want, into in (("force-open", 503, result.opened), ("reset", 200, result.closed)):
                waits = [asyncio.create_task(until_status(conn, path, want, deadline)) for conn in watchers]
                started = time.perf_counter()
                status = await admin.request("POST", f"/admin/breakers/{breaker}/{action}?by=fleet-bench", auth)
                if status != 200:
                    raise RuntimeError(f"POST /admin/breakers/{breaker}/{action} answered {status}")
                for seen in await asyncio.gather(*waits):
                    if seen is None:
                        result.missed += 1
                    else:
                        into.append(max(0.0, seen - started) * 1000)
    finally:
        for conn in (admin, *watchers):
            await conn.close()
    return result


@dataclass
class Admission:
    """What a shared limit let through while every replica was hammered."""

    statuses: Counter[int] = field(default_factory=Counter)
    first_sent: float = math.inf
    """perf_counter time the first admitted (2xx) request was sent."""
    last_answered: float = -math.inf
    """perf_counter time the last admitted request's answer arrived."""
    errors: int = 0

    @property
    def admitted(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


def allowed_at_most(limit: int, per: float, burst: int, admission: Admission) -> int:
    """The most a GCRA limit may admit between the first admitted request and the last answer: a
    fresh bucket passes ``burst + 1`` at once, then one every ``per / limit`` (proxy/policy/ratelimit.py).
    Every decision fell inside that span as the client saw it, so the bound holds whatever the latency."""
    if admission.admitted == 0:
        return 0
    span = max(0.0, admission.last_answered - admission.first_sent)
    return burst + 1 + math.floor(span * limit / per)


async def _hammer_one(port: int, path: str, headers: Sequence[tuple[str, str]], end: float, cap: int,
                      into: Admission, sent: list[int]) -> None:
    conn = Connection(port)
    try:
        while time.perf_counter() < end and sent[0] < cap:
            sent[0] += 1
            started = time.perf_counter()
            try:
                status = await conn.request("GET", path, headers)
            except (OSError, TimeoutError):
                into.errors += 1
                await conn.close()
                continue
            into.statuses[status] += 1
            if 200 <= status < 300:
                into.first_sent = min(into.first_sent, started)
                into.last_answered = max(into.last_answered, time.perf_counter())
    finally:
        await conn.close()


async def hammer(ports: Sequence[int], path: str, headers: Sequence[tuple[str, str]], conns_per_port: int,
                 seconds: float, cap: int = 100_000) -> Admission:
    """Closed loop on every port at once (``conns_per_port`` connections each, back to back) for
    ``seconds`` or ``cap`` requests in all, whichever comes first."""
    result, sent = Admission(), [0]
    end = time.perf_counter() + seconds
    await asyncio.gather(*(_hammer_one(port, path, headers, end, cap, result, sent)
                           for port in ports for _ in range(conns_per_port)))
    return result
