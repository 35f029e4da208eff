"""What aiohttp logs about a client's request, with the request's bytes taken out.

aiohttp's server logs a malformed request as ``Error handling request from <peer>`` with the
parser's exception, whose message quotes the offending bytes: a ``Cookie`` line, a request line
with ``?key=``/``access_token=``, a piece of the body. Its access logger writes the request line
and headers. Scrubbing patterns cannot know every secret a client may send, so the bytes never get
into a record in the first place: a filter on aiohttp's own loggers (every server the process
runs, the data and admin ports and any later listener, logs through them) keeps what happened
and drops what was sent:

- the message keeps the library's text; arguments that are not a number or an IP address become
  ``[redacted]`` (the peer address stays);
- an exception keeps its type (and HTTP status), and its traceback its frames, never its message;
  a malformed request (aiohttp's ``HttpProcessingError``, answered 400) is a warning, not an error:
  the client's mistake, not something for Sentry;
- ``aiohttp.access`` records are dropped: the sidecar writes its own access log
  (:mod:`proxy.observe.access`), which records the path without the query.

The filter runs in ``Logger.handle`` before any handler, so the JSON lines on stderr and Sentry's
logging integration (which hooks ``callHandlers``) both see only the cleaned record.
"""

from __future__ import annotations

import ipaddress
import logging
import traceback

from aiohttp.http_exceptions import HttpProcessingError

REDACTED = "[redacted]"
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.internal", "aiohttp.client", "aiohttp.websocket")
ACCESS_LOGGER = "aiohttp.access"
_CHAIN_LIMIT = 5
"""Chained exceptions shown at most (cause or context)."""


def _safe_arg(value: object) -> object:
    """A number, or an IP address (the peer), as it is; anything else is the client's and is withheld."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return REDACTED
        return value
    return REDACTED


def describe_exception(error: BaseException) -> str:
    """The exception's traceback frames and type names, every message left out (it may quote the request)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < _CHAIN_LIMIT:
        seen.add(id(current))
        status = getattr(current, "code", None)
        name = type(current).__module__ + "." + type(current).__qualname__
        frames = "".join(traceback.format_tb(current.__traceback__))
        head = "Traceback (most recent call last):\n" if frames else ""
        parts.append(f"{head}{frames}{name}" + (f" ({status})" if isinstance(status, int) else ""))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nwhile handling:\n".join(reversed(parts))


class ClientBytesFilter(logging.Filter):
    """Rewrites a library's record so that nothing a client sent survives in it (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == ACCESS_LOGGER:
            return False
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            try:
                record.msg = str(record.msg) % tuple(_safe_arg(arg) for arg in args)
            except (TypeError, ValueError):
                record.msg = str(record.msg)
            record.args = None
        error = record.exc_info[1] if record.exc_info else None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if error is not None:
            status = getattr(error, "code", None)
            record.msg = f"{record.msg} ({type(error).__name__}" + (f" {status})" if isinstance(status, int) else ")")
            record.exc_text = describe_exception(error)  # frames, for the log line; Sentry reads exc_info only
            if isinstance(error, HttpProcessingError) and record.levelno > logging.WARNING:
                # A client's malformed request, answered 400: worth a line, not an error report.
                record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


_FILTER = ClientBytesFilter()


def protect_library_logs() -> None:
    """Install the filter on aiohttp's loggers (idempotent): process-wide, so every server is covered."""
    for name in (*AIOHTTP_LOGGERS, ACCESS_LOGGER):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
