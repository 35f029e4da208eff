"""The doctor's checks that need no network: the config and lint, listeners, the admin token, the DSN's shape."""

from __future__ import annotations


from proxy.config import values as v
from proxy.config.lint import lint
from proxy.config.load import load_config, policy_trees
from proxy.config.model import Config
from proxy.doctor.report import FAIL, PASS, WARN, Result
from proxy.errors import ERROR, ConfigError, Problem


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


def check_listen(config: Config) -> Result:
    """Apps on the same host are the only intended clients; an open data port is an open proxy to paid APIs."""
    listeners = (("listen", config.listen), ("admin.listen", config.admin.listen))
    exposed = [f"{name} {address}" for name, address in listeners if not address.is_loopback]
    if exposed:
        return Result("listen addresses", WARN, "not loopback: " + ", ".join(exposed))
    return Result("listen addresses", PASS, f"loopback: {config.listen}, admin {config.admin.listen}")


def check_state_backend(config: Config) -> Result | None:
    """Only the memory backend gets a row here; Redis gets its own network checks."""
    if config.state.backend == "memory":
        detail = "memory: breakers and rate limits are per process, not per fleet"
        if config.webhooks:
            detail += "; webhook events not yet delivered are lost on restart"
        return Result("state backend", WARN, detail)
    return None


def check_sentry_dsn(config: Config) -> Result:
    if config.sentry is None:
        return Result("sentry dsn", WARN, "not set: errors are not reported (errors.sentry.dsn)")
    try:
        v.sentry_dsn(config.sentry.dsn)
    except ValueError as error:
        return Result("sentry dsn", FAIL, str(error))
    return Result("sentry dsn", PASS, f"well-formed (environment {config.sentry.environment})")
