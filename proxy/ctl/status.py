"""``resilience-proxy status``: the status document (``GET /admin/status``) as a terminal table.

    UPSTREAM  ROUTE       BREAKER        RPS  ERROR%    P50    P99  RETRY/S  LIMITED/S
    twilio    twilio_sms  open (in 25s)  4.2  100.0%  1.0ms  312ms     0.00       0.00

Breakers are the fleet's (from the shared state, with Redis), traffic this process's last minute:
the line above the table says which process answered and over how long. ``--watch N`` redraws
every N seconds until Ctrl-C; ``--json`` prints the document itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from proxy.config.load import load_config
from proxy.ctl.admin import (
    DEFAULT_ADMIN_URL,
    TOKEN_ENV,
    AdminClient,
    AdminError,
    admin_from_listen,
    admin_url,
    env_token,
)
from proxy.errors import ConfigError

COLUMNS = ("UPSTREAM", "ROUTE", "BREAKER", "RPS", "ERROR%", "P50", "P99", "RETRY/S", "LIMITED/S")
RIGHT = frozenset({"RPS", "ERROR%", "P50", "P99", "RETRY/S", "LIMITED/S"})
CLEAR = "\x1b[H\x1b[2J"


def breaker_cell(breaker: dict[str, Any] | None) -> str:
    if breaker is None:
        return "-"
    state = breaker["state"]
    if state == "open" and breaker.get("seconds_left") is not None:
        left = breaker["seconds_left"]
        return f"open (probe in {_span(left)})" if left >= 0.5 else "open (probe due)"
    if state == "half_open":
        probes = breaker.get("probes_in_flight", 0)
        return f"half_open ({probes} probe{'s' if probes != 1 else ''})"
    if breaker.get("forced_by"):
        return f"{state} (by {breaker['forced_by']})"
    return str(state)


def render(document: dict[str, Any]) -> str:
    """The table, with one line above it saying where the numbers come from."""
    backend = document["state_backend"]
    backend_text = f"redis {'up' if backend['up'] else 'DOWN'}" if backend["kind"] == "redis" else "memory"
    scope = "fleet-wide" if document["scopes"]["breakers"] == "fleet" else "this process (memory backend)"
    config = document["config"]
    last = config.get("last_reload")
    reload_text = "" if last is None or last["result"] == "ok" else " · last reload REFUSED"
    header = (f"pid {document['pid']} · config {config['version']}{reload_text} · state {backend_text} · "
              f"breakers {scope}; traffic this process, last {document['window_seconds']:g}s")
    rows = [COLUMNS]
    for route in document["routes"]:
        rows.append((route["upstream"], route["route"], breaker_cell(route["breaker"]), _rate(route["rps"]),
                     _percent(route["error_ratio"]), _ms(route["p50_ms"]), _ms(route["p99_ms"]),
                     _rate(route["retries_per_second"]), _rate(route["limited_per_second"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) if COLUMNS[i] in RIGHT else cell.ljust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]
    return "\n".join([header, *lines]) + "\n"


def status(client: AdminClient, watch: float | None, as_json: bool, out: TextIO = sys.stdout,
           sleep: Callable[[float], None] = time.sleep) -> int:
    """Print once, or every ``watch`` seconds until Ctrl-C. Exit 1 when the admin port cannot answer
    the first time; while watching, a failure is shown and the next round tries again."""
    first = True
    try:
        while True:
            try:
                document = client.get("/admin/status").body
                text = json.dumps(document) + "\n" if as_json else render(document)
            except AdminError as error:
                if first or watch is None:
                    print(f"resilience-proxy status: {error}", file=sys.stderr)
                    return 1
                text = f"{error}\n"
            if watch is not None and not as_json and out.isatty():
                text = CLEAR + text
            elif watch is not None and not as_json and not first:
                text = "\n" + text
            out.write(text)
            out.flush()
            first = False
            if watch is None:
                return 0
            sleep(watch)
    except KeyboardInterrupt:
        if not as_json:
            out.write("\n")
        return 0


def _span(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _rate(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f}s" if value >= 1000 else f"{value:.1f}ms" if value < 100 else f"{value:.0f}ms"


def add_status_command(commands: Any) -> None:
    """Register ``status`` on the ``resilience-proxy`` parser's subcommands."""
    parser = commands.add_parser(
        "status", help="breakers and the last minute of traffic per route, from a running sidecar's admin port",
        description="A table of every route: breaker state (fleet-wide with Redis), requests per second, error "
                    "ratio, latency and refusals over the last minute (the process that answered). Exit 1 when "
                    f"the admin port cannot answer. The token, if any, comes from {TOKEN_ENV}.")
    parser.add_argument("--admin", metavar="URL",
                        help=f"the sidecar's admin port (default: admin.listen of --config, else {DEFAULT_ADMIN_URL})")
    parser.add_argument("--config", metavar="FILE", help="process config whose admin.listen to reach")
    parser.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                        help="redraw every SECONDS (default 2) until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="print the status document (one line per redraw)")
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    if args.watch is not None and not args.watch > 0:
        print("--watch takes a number of seconds above 0", file=sys.stderr)
        return 2
    try:
        admin = admin_url(args.admin) if args.admin else DEFAULT_ADMIN_URL
    except AdminError as error:
        print(error, file=sys.stderr)
        return 2
    if args.config and not args.admin:
        try:
            listen = load_config(args.config).admin.listen
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 1
        admin = admin_from_listen(listen.host, listen.port)
    return status(AdminClient(admin, token=env_token()), args.watch, args.json)
