"""``resilience-proxy doctor``: is this config ready for production, checked from where it will run.

``validate`` reads files; ``doctor`` also asks the world: can Redis be reached, and fast, does it take
the Lua scripts, is the Slack token valid and the channel there, is the Sentry DSN well formed and its
host reachable, does each upstream resolve and complete a verified TLS handshake. Each check is a
small function giving :class:`Result` rows; the network ones live in :mod:`proxy.doctor.network`.

Statuses: PASS; WARN (works, but not as production should: memory state, no admin token, a listener
off loopback, lint warnings); FAIL (something configured cannot work: an unloadable config, Redis
down, a refused token, an unreachable upstream); SKIP (``--skip-network``, or a check that depends on
one that failed). Exit status: 1 on any FAIL, 2 with ``--strict`` on any WARN, else 0.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from proxy.config.model import Config
from proxy.doctor.local import check_admin_token, check_config, check_listen, check_sentry_dsn, check_state_backend
from proxy.doctor.report import PASS, SKIP, WARN, Result, exit_status, render


async def diagnose(config: Config, *, skip_network: bool, send_test_alert: bool) -> list[Result]:
    """Every check after the config's own, in table order."""
    # Network checks import redis, slack-sdk and sentry-sdk: only a run that makes them pays for that.
    from proxy.doctor.network import check_redis, check_sentry_reachable, check_slack, check_upstream, send_alerts

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
