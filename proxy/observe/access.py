"""The access log: one JSON line per request, written in batches.

Going through :mod:`logging` costs a stack inspection, a LogRecord, a lock and a write
syscall per line, a large share of the sidecar's throughput (figures: bench/README.md,
"Figures behind the code"). Lines are instead formatted directly and written at most every ``interval`` seconds, one write for
all lines since the last: at most that much of the log is lost if the process is killed.

Lines are encoded with orjson: ``json.dumps`` was the largest single cost of the line (figures:
bench/README.md, "Figures behind the code"). The text is the same as ``json.dumps(line,
separators=(",", ":"))`` would write: a line that orjson would write differently (non-ASCII or DEL
characters, which ``json`` escapes as ``\\uXXXX``; lone surrogates, which orjson refuses) is written by
``json`` instead.

The line records the path without its query string (Google API keys travel in ``?key=``),
with e-mails and phone numbers masked (Google calendar ids are often addresses), and never a
header value.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from functools import lru_cache
from typing import Any, TextIO

import orjson

from proxy.observe.scrub import scrub_text

_FLUSH_BYTES = 64 * 1024
_PIPE_BUF = 4096
"""The largest write to a pipe that POSIX keeps whole when other processes write to it too."""


class AccessLog:
    """Buffered JSON access lines, in the same shape as the other log lines."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True, interval: float = 0.05,
                 shared: bool = False) -> None:
        """``shared``: other processes write to the same stream (``--workers``' stderr, a pipe under a
        container runtime). A pipe keeps a write whole only up to 4 KiB, and a batch is up to 64 KiB:
        each write is then whole lines of at most 4 KiB, so another worker's lines never land inside one."""
        self.enabled = enabled
        self._shared = shared
        self._stream = stream
        self._interval = interval
        self._lines: list[str] = []
        self._size = 0
        self._flush_scheduled = False
        self._pid = os.getpid()
        self._second = -1
        self._ts_prefix = ""

    def record(
        self, request_id: str, upstream: str | None, method: str, target: str, status: int, seconds: float,
        bytes_in: int, bytes_out: int, error: str | None, attempts: int = 0, route: str | None = None,
    ) -> None:
        """One line. ``route``: the route that took the request (the unit breakers, limits and metrics
        count in), None when it was refused before one was chosen (no upstream, a body too large)."""
        if not self.enabled:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._ts_prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line = encode({
            "ts": f"{self._ts_prefix}.{int((now - second) * 1000):03d}Z", "level": "info",
            "logger": "resilience_proxy.access", "msg": "request", "pid": self._pid,
            "request_id": request_id, "upstream": upstream, "route": route, "method": method,
            "path": logged_path(target.split("?", 1)[0][:1024]), "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "bytes_in": bytes_in, "bytes_out": bytes_out, "error": error, "attempts": attempts,
        })
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        """Write every buffered line now (also called on shutdown)."""
        self._flush_scheduled = False
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        self._size = 0
        stream = self._stream or sys.stderr
        try:
            for text in _whole_lines(lines, _PIPE_BUF) if self._shared else ["\n".join(lines) + "\n"]:
                stream.write(text)
                stream.flush()
        except (OSError, ValueError):  # a closed or full stderr must never break proxying
            pass


def _whole_lines(lines: list[str], limit: int) -> list[str]:
    """``lines`` as texts of whole lines of at most ``limit`` characters each (a longer line alone).
    The lines are ASCII: characters are bytes."""
    texts, batch, size = [], [], 0
    for line in lines:
        if batch and size + len(line) + 1 > limit:
            texts.append("\n".join(batch) + "\n")
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    texts.append("\n".join(batch) + "\n")
    return texts


@lru_cache(maxsize=512)
def logged_path(path: str) -> str:
    """``path`` as the line shows it: scrubbed. Remembered, because a sidecar sees the same few paths
    over and over (an account's endpoints), and scrubbing one costs more than encoding the whole line
    (a memory-only cache: the raw paths it holds are never written anywhere)."""
    return scrub_text(path)


def encode(fields: dict[str, Any]) -> str:
    """``fields`` as ``json.dumps(fields, separators=(",", ":"))`` writes them, at orjson's cost when it can."""
    try:
        raw = orjson.dumps(fields)
    except orjson.JSONEncodeError:  # a lone surrogate (a path that was not UTF-8)
        return json.dumps(fields, separators=(",", ":"))
    if raw.isascii() and b"\x7f" not in raw:
        return raw.decode()
    return json.dumps(fields, separators=(",", ":"))
