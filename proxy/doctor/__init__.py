"""``resilience-proxy doctor``: is this config ready for production, checked from where it will run.

``validate`` reads files; ``doctor`` also asks the world: which Redis is there (one server, a master
behind Sentinel, a whole Cluster), can it be reached, and fast, does it take the Lua scripts, is the
Slack token valid and the channel there, is the Sentry DSN well formed and its host reachable, does
each upstream resolve and complete a verified TLS handshake. Each check is a
small function giving :class:`Result` rows; the network ones live in :mod:`proxy.doctor.network`,
:mod:`proxy.doctor.redis_checks` and :mod:`proxy.doctor.cluster_checks`.

Statuses: PASS; WARN (works, but not as production should: memory state, no admin token, a listener
off loopback, lint warnings); FAIL (something configured cannot work: an unloadable config, Redis
down, a refused token, an unreachable upstream); SKIP (``--skip-network``, or a check that depends on
one that failed). Exit status: 1 on any FAIL, 2 with ``--strict`` on any WARN, else 0.

The network checks run concurrently (each is bounded by its timeout, so the whole run takes about as
long as the slowest one). The table keeps a fixed order, and each row is printed as soon as it and
every row above it are known: a script reads the same rows in the same order every time, and a
person sees the quick ones at once rather than after the slowest.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from proxy.config.model import Config
from proxy.config.redis_url import is_cluster
from proxy.doctor.local import check_admin_token, check_config, check_listen, check_sentry_dsn, check_state_backend
from proxy.doctor.report import FAIL, PASS, SKIP, WARN, Result, exit_status, header, row, to_json, width_for


@dataclass(frozen=True)
class Step:
    """Rows of the table, in order: the names they will have, and how to get them."""

    names: tuple[str, ...]
    run: Callable[[], Awaitable[list[Result]]]


def _done(*results: Result) -> Step:
    async def known() -> list[Result]:
        return list(results)
    return Step(tuple(r.check for r in results), known)


def _single(name: str, check: Callable[[], Awaitable[Result]]) -> Step:
    async def one() -> list[Result]:
        return [await check()]
    return Step((name,), one)


def plan(config: Config, *, skip_network: bool, send_test_alert: bool) -> list[Step]:
    """Every check after the config's own, in table order."""
    # Network checks import redis, slack-sdk and sentry-sdk: only a run that makes them pays for that.
    from proxy.doctor.cluster_checks import check_cluster
    from proxy.doctor.network import check_sentry_reachable, check_slack, check_upstream, send_alerts
    from proxy.doctor.redis_checks import check_redis, row_names

    steps: list[Step] = []
    backend = check_state_backend(config)
    if backend is not None:
        steps.append(_done(backend))
    elif skip_network:
        steps.append(_done(*(Result(name, SKIP, "--skip-network") for name in row_names(config.state.redis_url))))
    else:
        check = check_cluster if is_cluster(config.state.redis_url) else check_redis
        steps.append(Step(row_names(config.state.redis_url), lambda: check(config.state)))
    slack = config.slack
    if slack is None:
        steps.append(_done(Result("slack", WARN, "not set: no alerts (alerts.slack.token)")))
    elif skip_network:
        steps.append(_done(Result("slack", SKIP, "--skip-network")))
    else:
        steps.append(Step(("slack token", "slack channel"), lambda: check_slack(slack)))
    dsn = check_sentry_dsn(config)
    steps.append(_done(dsn))
    if config.sentry is not None and dsn.status == PASS:
        sentry = config.sentry
        steps.append(_done(Result("sentry host", SKIP, "--skip-network")) if skip_network
                     else _single("sentry host", lambda: check_sentry_reachable(sentry.dsn)))
    for upstream in config.upstreams:
        name = f"upstream {upstream.name}"
        steps.append(_done(Result(name, SKIP, "--skip-network")) if skip_network
                     else _single(name, lambda upstream=upstream: check_upstream(upstream)))  # type: ignore[misc]
    steps.append(_done(check_admin_token(config)))
    steps.append(_done(check_listen(config)))
    if send_test_alert:
        steps.append(_done(Result("test alert", SKIP, "--skip-network")) if skip_network
                     else Step(("test slack message", "test sentry event"), lambda: send_alerts(config)))
    return steps


async def run_in_order(steps: list[Step]) -> AsyncIterator[Result]:
    """Start every step at once; yield their rows in the steps' order, each as soon as it can be."""
    tasks = [asyncio.create_task(step.run()) for step in steps]
    try:
        for step, task in zip(steps, tasks):
            try:
                results = await task
            except Exception as error:  # a check's own bug: still a complete report
                results = [Result(name, FAIL, f"the check failed: {type(error).__name__}: {error}")
                           for name in step.names]
            for result in results:
                yield result
    finally:
        for task in tasks:
            task.cancel()


async def diagnose(config: Config, *, skip_network: bool, send_test_alert: bool) -> list[Result]:
    """Every check after the config's own, in table order, all at once."""
    return [r async for r in run_in_order(plan(config, skip_network=skip_network, send_test_alert=send_test_alert))]


def doctor(path: str, *, skip_network: bool = False, send_test_alert: bool = False, strict: bool = False,
           output: str = "table", out: TextIO = sys.stdout) -> int:
    """Run every check and print the report: a table row by row (then the config's problems), or with
    ``output="json"`` one JSON document at the end. The exit status is the same either way."""
    config, results, problems = check_config(path)
    if output == "json":
        if config is not None:
            results += asyncio.run(diagnose(config, skip_network=skip_network, send_test_alert=send_test_alert))
        status = exit_status(results, strict=strict)
        out.write(to_json(results, problems, status))
        return status
    steps = [] if config is None else plan(config, skip_network=skip_network, send_test_alert=send_test_alert)
    width = width_for([r.check for r in results] + [name for step in steps for name in step.names])
    out.write(header(width) + "".join(row(r, width) for r in results))
    out.flush()

    async def stream() -> None:
        async for result in run_in_order(steps):
            results.append(result)
            out.write(row(result, width))
            out.flush()

    asyncio.run(stream())
    if problems:
        out.write("\n" + "".join(f"{p}\n" for p in problems))
    return exit_status(results, strict=strict)
