"""JSON log lines, one object per line, and the per-request access line.

The access line records the path without its query string: Google API keys travel in
``?key=`` and must never reach a log. Header values are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

ACCESS = logging.getLogger("resilience_proxy.access")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def configure_logging(level: str, access: bool) -> None:
    """Send every log record to stderr as JSON; the access logger only when enabled."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    ACCESS.setLevel(logging.INFO if access else logging.CRITICAL + 1)
    ACCESS.propagate = True


def log_access(
    request_id: str, upstream: str | None, method: str, target: str, status: int, seconds: float,
    bytes_in: int, bytes_out: int, error: str | None,
) -> None:
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    path = target.split("?", 1)[0]
    ACCESS.info("request", extra={
        "request_id": request_id, "upstream": upstream, "method": method, "path": path[:1024],
        "status": status, "duration_ms": round(seconds * 1000, 3), "bytes_in": bytes_in,
        "bytes_out": bytes_out, "error": error,
    })
