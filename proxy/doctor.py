"""``resilience-proxy doctor``: is this config ready for production, checked from where it will run.

``validate`` reads files; ``doctor`` also asks the world: can Redis be reached, and fast, does it take
the Lua scripts, is the Slack token valid and the channel there, is the Sentry DSN well formed and its
host reachable, does each upstream resolve and complete a verified TLS handshake. Each check is a
small function giving :class:`Result` rows; the network ones live in :mod:`proxy.doctor_network`.

Statuses: PASS; WARN (works, but not as production should: memory state, no admin token, a listener
off loopback, lint warnings); FAIL (something configured cannot work: an unloadable config, Redis
down, a refused token, an unreachable upstream); SKIP (``--skip-network``, or a check that depends on
one that failed). Exit status: 1 on any FAIL, 2 with ``--strict`` on any WARN, else 0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from proxy.config import values as v
from proxy.config.lint import lint
from proxy.config.load import load_config, policy_trees
from proxy.config.model import Address, Config
from proxy.errors import ERROR, ConfigError, Problem

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Result:
    """One row of the report."""

    check: str
    status: str
    detail: str


def check_config(path: str) -> tuple[Config | None, list[Result], list[Problem]]:
    """Load and lint; the problems are printed under the table, the row says how many."""
    try:
        config = load_config(path)
    except ConfigError as error:
        return None, [Result("config", FAIL, f"{_plural(len(error.problems), 'error')} (see below)")], error.problems
    problems = lint(config, policy_trees(config))
    errors = sum(1 for p in problems if p.severity == ERROR)
    warnings = len(problems) - errors
    summary = f"{_plural(len(config.upstreams), 'upstream')} from {_plural(len(config.policy_files), 'policy file')}"
    if errors:
        counts = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
        return config, [Result("config", FAIL, f"{summary}; {counts} (see below)")], problems
    if warnings:
        return config, [Result("config", WARN, f"{summary}; {_plural(warnings, 'warning')} (see below)")], problems
    return config, [Result("config", PASS, summary)], problems


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def check_admin_token(config: Config) -> Result:
    if config.admin.token:
        return Result("admin token", PASS, "set: admin mutations require it")
    return Result("admin token", WARN, "not set: force-open, disable and reset are refused (admin.token)")


def _loopback(address: Address) -> bool:
    if address.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        return False


def check_listen(config: Config) -> Result:
    """Apps on the same host are the only intended clients; an open data port is an open proxy to paid APIs."""
    listeners = (("listen", config.listen), ("admin.listen", config.admin.listen))
    exposed = [f"{name} {address}" for name, address in listeners if not _loopback(address)]
    if exposed:
        return Result("listen addresses", WARN, "not loopback: " + ", ".join(exposed))
    return Result("listen addresses", PASS, f"loopback: {config.listen}, admin {config.admin.listen}")


def check_state_backend(config: Config) -> Result | None:
    """Only the memory backend gets a row here; Redis gets its own network checks."""
    if config.state.backend == "memory":
        return Result("state backend", WARN, "memory: breakers and rate limits are per process, not per fleet")
    return None


def check_sentry_dsn(config: Config) -> Result:
    if config.sentry is None:
        return Result("sentry dsn", WARN, "not set: errors are not reported (errors.sentry.dsn)")
    try:
        v.sentry_dsn(config.sentry.dsn)
    except ValueError as error:
        return Result("sentry dsn", FAIL, str(error))
    return Result("sentry dsn", PASS, f"well-formed (environment {config.sentry.environment})")


def exit_status(results: Sequence[Result], *, strict: bool) -> int:
    statuses = {r.status for r in results}
    if FAIL in statuses:
        return 1
    return 2 if strict and WARN in statuses else 0


def render(results: Sequence[Result]) -> str:
    width = max(len("CHECK"), *(len(r.check) for r in results))
    lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
    lines += [f"{r.check:<{width}}  {r.status:<6}  {r.detail}" for r in results]
    return "\n".join(lines) + "\n"


async def diagnose(config: Config, *, skip_network: bool, send_test_alert: bool) -> list[Result]:
    """Every check after the config's own, in table order."""
    from proxy.doctor_network import check_redis, check_sentry_reachable, check_slack, check_upstream, send_alerts

    results: list[Result] = []
    backend = check_state_backend(config)
    if backend is not None:
        results.append(backend)
    elif skip_network:
        results += [Result("redis", SKIP, "--skip-network"), Result("lua scripts", SKIP, "--skip-network")]
    else:
        results += await check_redis(config.state)
    if config.slack is None:
        results.append(Result("slack", WARN, "not set: no alerts (alerts.slack.token)"))
    elif skip_network:
        results.append(Result("slack", SKIP, "--skip-network"))
    else:
        results += await check_slack(config.slack)
    results.append(check_sentry_dsn(config))
    if config.sentry is not None and results[-1].status == PASS:
        results.append(Result("sentry host", SKIP, "--skip-network") if skip_network
                       else await check_sentry_reachable(config.sentry.dsn))
    for upstream in config.upstreams:
        results.append(Result(f"upstream {upstream.name}", SKIP, "--skip-network") if skip_network
                       else await check_upstream(upstream))
    results.append(check_admin_token(config))
    results.append(check_listen(config))
    if send_test_alert:
        results += [Result("test alert", SKIP, "--skip-network")] if skip_network else await send_alerts(config)
    return results


def doctor(path: str, *, skip_network: bool = False, send_test_alert: bool = False, strict: bool = False,
           out: TextIO = sys.stdout) -> int:
    """Run every check, print the table (then the config's problems), return the exit status."""
    config, results, problems = check_config(path)
    if config is not None:
        results += asyncio.run(diagnose(config, skip_network=skip_network, send_test_alert=send_test_alert))
    out.write(render(results))
    if problems:
        out.write("\n" + "".join(f"{p}\n" for p in problems))
    return exit_status(results, strict=strict)
