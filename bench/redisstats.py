"""How many commands the sidecar sent to the bench's own Redis, from ``INFO commandstats``.

A closed breaker must cost no Redis round trip on the hot path: outcomes go in batches and views
are refreshed in the background. Counting every command Redis executed during a wrk run and
dividing by the requests wrk completed shows it: the figure is far below 1 when that holds, and at
least 1 when the hot path asks Redis per request. Commands that a Lua script runs count in
commandstats too (as do the pieces of a pipeline), so the figure is an upper bound on round trips.

A dozen lines of RESP over a socket rather than redis-py, so the runner needs nothing installed.
"""

from __future__ import annotations

import re
import socket

_CMDSTAT = re.compile(r"^cmdstat_(\S+?):calls=(\d+)", re.MULTILINE)
_CMDSTAT_LINE = re.compile(r"^cmdstat_(\S+?):([^\r\n]+)", re.MULTILINE)
# The snapshot taken before a run is itself an INFO that the snapshot after it counts.
OWN_COMMANDS = {"info": 1}


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command to 127.0.0.1:port and return its reply (simple, error or bulk string)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while b"\r\n" not in data:
            data += _recv(sock)
        head, _, rest = data.partition(b"\r\n")
        if head[:1] in (b"+", b"-", b":"):
            if head[:1] == b"-":
                raise RuntimeError(f"redis :{port} {' '.join(args)}: {head[1:].decode(errors='replace')}")
            return head[1:]
        if head[:1] != b"$":
            raise RuntimeError(f"redis :{port}: unexpected reply {head[:40]!r}")
        size = int(head[1:])
        while len(rest) < size + 2:
            rest += _recv(sock)
        return rest[:size]


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("redis closed the connection")
    return chunk


def ping(port: int) -> bool:
    """True when a Redis answers PONG on 127.0.0.1:port."""
    try:
        return command(port, "PING", timeout=0.5) == b"PONG"
    except (OSError, RuntimeError):
        return False


def parse_commandstats(text: str) -> dict[str, int]:
    """``INFO commandstats`` text -> calls per command (``client|setname`` style names kept)."""
    return {name: int(calls) for name, calls in _CMDSTAT.findall(text)}


def commandstats(port: int) -> dict[str, int]:
    """Calls per command since the server started."""
    return parse_commandstats(command(port, "INFO", "commandstats").decode())


def commandstats_fields(port: int) -> dict[str, dict[str, float]]:
    """Every field of each command's line: ``calls``, ``usec_per_call`` (a script's includes the commands
    it ran), ``failed_calls`` (Redis 6.2+) ..."""
    text = command(port, "INFO", "commandstats").decode()
    return {name: {key: float(value) for key, _, value in (pair.partition("=") for pair in fields.split(","))}
            for name, fields in _CMDSTAT_LINE.findall(text)}


def delta(before: dict[str, int], after: dict[str, int], own: dict[str, int] = OWN_COMMANDS) -> dict[str, int]:
    """Commands executed between two snapshots, without the snapshots' own; zero entries dropped."""
    out = {name: after.get(name, 0) - before.get(name, 0) - own.get(name, 0) for name in after}
    return {name: n for name, n in sorted(out.items()) if n > 0}
