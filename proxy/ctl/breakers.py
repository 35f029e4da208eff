"""``resilience-proxy breakers list|force-open|disable|reset``: the admin API's breaker endpoints from a terminal.

A breaker is named as the sidecar names it (:class:`proxy.config.model.BreakerId`): ``upstream/route``
always works; the short name (the route, or the upstream for its default route) works while it is unique.
``list`` prints a table (or the admin API's JSON with ``--json``); an action prints the transition.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any
from urllib.parse import quote

from proxy.config.model import BreakerId
from proxy.ctl.admin import DEFAULT_ADMIN_URL, TOKEN_ENV, AdminClient, AdminError, admin_url, env_token, token_from_env
from proxy.policy.breaker import Action, State

COLUMNS = ("NAME", "UPSTREAM/ROUTE", "STATE", "SINCE", "TIME LEFT", "FLEET-WIDE", "REASON")
EPILOG = (f"Reads need nothing. force-open, disable and reset need the sidecar's admin.token in the environment "
          f"variable {TOKEN_ENV} (never a flag: a flag's value stays in shell history and shows in ps). "
          f"Exit status 0 when done, 1 when the admin port cannot be reached, refuses, or has no such breaker.")


def span(seconds: float) -> str:
    """``45s``, ``2m 10s``, ``1h 5m``, ``3d 4h``: two units at most, for a glance."""
    total = max(0, round(seconds))
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if total >= size:
            whole, rest = divmod(total, size)
            rest //= small_size
            return f"{whole}{unit} {rest}{smaller}" if rest else f"{whole}{unit}"
    return f"{total}s"


def _time_left(breaker: dict[str, Any]) -> str:
    state = breaker["state"]
    if state == State.OPEN.value and breaker.get("seconds_left") is not None:
        return f"probe in {span(breaker['seconds_left'])}"
    if state == State.HALF_OPEN.value:
        return "probing"
    if state in (State.FORCED_OPEN.value, State.DISABLED.value):
        return "until reset"
    return "-"


def _reason(breaker: dict[str, Any]) -> str:
    reason = str(breaker.get("reason") or "")
    forced_by = breaker.get("forced_by")
    if forced_by and forced_by not in reason:
        reason = f"{reason} (by {forced_by})" if reason else f"by {forced_by}"
    return reason or "-"


def table(document: dict[str, Any], now: float) -> str:
    """The ``list`` table; ``now`` is the sidecar's clock, so "ago" is right whatever this machine's clock says."""
    fleet = "yes" if document.get("fleet_wide") else "no (this process)"
    rows = [COLUMNS]
    for breaker in document.get("breakers", []):
        changed = breaker.get("changed_at")
        rows.append((breaker["name"], f"{breaker['upstream']}/{breaker['route']}", breaker["state"],
                     f"{span(now - changed)} ago" if changed else "-", _time_left(breaker), fleet, _reason(breaker)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in rows) + "\n"


def find(breakers: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The breaker ``name`` designates (``upstream/route``, or a unique short name), else an AdminError."""
    if "/" in name:
        wanted = BreakerId.parse(name)
        found = [b for b in breakers if (b["upstream"], b["route"]) == (wanted.upstream, wanted.route)]
    else:
        found = [b for b in breakers if b["name"] == name]
    if len(found) == 1:
        return found[0]
    if found:
        keys = ", ".join(f"{b['upstream']}/{b['route']}" for b in found)
        raise AdminError(f"breaker name '{name}' is ambiguous ({keys}): write it as UPSTREAM/ROUTE")
    known = ", ".join(sorted(f"{b['upstream']}/{b['route']}" for b in breakers)) or "none"
    raise AdminError(f"no breaker '{name}' on this sidecar (known: {known}; `resilience-proxy breakers list` "
                     f"shows them)")


def _list(client: AdminClient, args: argparse.Namespace) -> int:
    answer = client.get("/admin/breakers")
    if args.json:
        sys.stdout.write(json.dumps(answer.body, indent=2) + "\n")
    else:
        sys.stdout.write(table(answer.body, answer.server_time or time.time()))
    return 0


def _act(client: AdminClient, args: argparse.Namespace) -> int:
    token = token_from_env()  # before any request: a mutation without a token is refused in every case
    breaker = find(client.get("/admin/breakers").body.get("breakers", []), args.name)
    path = (f"/admin/breakers/{quote(breaker['upstream'], safe='')}/{quote(breaker['route'], safe='')}/"
            f"{args.action}")
    try:
        answer = client.post(path, {"by": args.by}, token)
    except AdminError as error:
        if error.status == 404:  # removed by a reload between the list and the action
            raise AdminError(f"no breaker '{args.name}' on this sidecar any more (the config was reloaded?)") from None
        raise
    if args.json:
        sys.stdout.write(json.dumps(answer.body, indent=2) + "\n")
        return 0
    transition = answer.body.get("transition", {})
    after = answer.body.get("breaker", breaker)
    change = (f"{transition.get('from')} -> {transition.get('to')}" if transition.get("from") != transition.get("to")
              else f"already {transition.get('to')}")
    sys.stdout.write(f"{after['upstream']}/{after['route']}: {change} (by {args.by})\n")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        client = AdminClient(admin_url(args.admin), token=env_token())
        return _list(client, args) if args.action == "list" else _act(client, args)
    except AdminError as error:
        print(f"resilience-proxy breakers: {error}", file=sys.stderr)
        return 1


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


def add_breakers_command(commands: Any) -> None:
    """Register ``breakers`` on the top-level subparsers (``commands``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", default=DEFAULT_ADMIN_URL, metavar="URL",
                        help=f"the sidecar's admin port (default {DEFAULT_ADMIN_URL}, the default admin.listen)")
    common.add_argument("--json", action="store_true", help="print the admin API's JSON answer instead")
    breakers = commands.add_parser("breakers", help="list breakers, force one open, disable or reset it",
                                   description="The breakers of a running sidecar, through its admin port.",
                                   epilog=EPILOG)
    actions = breakers.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], epilog=EPILOG,
                                 help="every breaker: state, since when, time left, whether the fleet shares it")
    listing.set_defaults(handler=run)
    helps = {Action.FORCE_OPEN: "refuse every call until reset (the whole fleet with Redis)",
             Action.DISABLE: "let every call through, never open, until reset",
             Action.RESET: "close it and clear its counts"}
    for action in Action:
        parser = actions.add_parser(action.value, parents=[common], help=helps[action], epilog=EPILOG)
        parser.add_argument("name", metavar="NAME", help="UPSTREAM/ROUTE, or the breaker's name when unique")
        parser.add_argument("--by", default=_login(), metavar="WHO",
                            help="who acts, for the log and alerts (default: your login name)")
        parser.set_defaults(handler=run)
