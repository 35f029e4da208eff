"""Loading the process config and its policy files into a :class:`~proxy.config.model.Config`.

Known keys only; defaults first, then what the file says. Every problem in every file is
collected and raised together as one :class:`~proxy.errors.ConfigError`, each line naming
``file:line:col: key.path: what is wrong``.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.config import values as v
from proxy.config.model import (
    ERROR_FORMATS,
    AdminSettings,
    Config,
    LogSettings,
    SentrySettings,
    SlackSettings,
    StateSettings,
    Upstream,
)
from proxy.config.policies import read_routes
from proxy.config.reader import Section
from proxy.config.redis_url import redis_url
from proxy.config.yamltree import Mark, YNode, decode, parse_yaml
from proxy.errors import ConfigError, Problem

if TYPE_CHECKING:
    from proxy.config.webhook_reader import DeclaredWebhook

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:9901"
POLICY_SUFFIXES = (".yaml", ".yml")


def shown_path(path: str | Path) -> str:
    """The path as users will recognise it: relative to the working directory when below it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, expand and validate ``path`` and every policy file it names; raise ConfigError with all problems."""
    environ = os.environ if environ is None else environ
    problems: list[Problem] = []
    config_file = Path(path)
    root = _read(config_file, environ, problems)
    if root is None:
        raise ConfigError(problems or [Problem(shown_path(config_file), 1, 1, "",
                                               "empty configuration file (write {} for every default)")])

    top = Section(root, "", problems)
    listen = top.get("listen", v.address, v.address(DEFAULT_LISTEN))
    admin = top.section("admin")
    admin_settings = AdminSettings(
        listen=admin.get("listen", v.address, v.address(DEFAULT_ADMIN_LISTEN)),
        token=admin.get("token", str, "") or None,
    )
    admin.finish()
    state = top.section("state")
    state_settings = StateSettings(
        backend=state.get("backend", v.one_of("memory", "redis"), "memory"),
        redis_url=state.get("redis_url", redis_url, "redis://127.0.0.1:6379/0"),
        redis_timeout=state.get("redis_timeout", _redis_timeout, 0.05),
        key_prefix=state.get("key_prefix", v.text, "rp:"),
        required=state.get("required", v.boolean, False),
    )
    state.finish()
    log = top.section("log")
    log_settings = LogSettings(
        level=log.get("level", v.one_of("debug", "info", "warning", "error"), "info"),
        access=log.get("access", v.boolean, True),
    )
    log.finish()
    slack = _read_slack(top.section("alerts"))
    sentry = _read_sentry(top.section("errors"))
    org_header = top.get("org_header", v.header_name, "X-Org-Id")
    client_ip_header = top.get("client_ip_header", v.header_name, "X-Forwarded-For")
    shutdown_grace = top.get("shutdown_grace", v.duration, 20.0)
    webhooks_section = top.section("webhooks")
    webhooks_listen = webhooks_section.get("listen", v.address, None)
    webhooks_section.finish()
    policy_files = _policy_files(top, config_file.parent, problems)
    top.finish()

    if admin_settings.listen == listen and listen.port != 0:
        top.error(top.mark_of("admin"), "admin.listen", f"must differ from listen ({listen})")

    declared: list[_Declared] = []
    hooks: list[DeclaredWebhook] = []
    for policy_file in policy_files:
        declared.extend(_read_policy_file(policy_file, environ, problems,
                                          tuple(h for h in (org_header, client_ip_header) if h), hooks))
    _check_unique(declared, problems, top.mark_of("policies") if top.has("policies") else Mark(root.mark.file, 1, 1))
    if hooks:
        from proxy.config.webhook_reader import check_unique

        check_unique(hooks, problems)
    if webhooks_listen is not None and webhooks_listen in (listen, admin_settings.listen) and webhooks_listen.port:
        top.error(webhooks_section.mark_of("listen"), "webhooks.listen", "must differ from listen and admin.listen")
    upstreams = [d.upstream for d in declared]

    if problems:
        raise ConfigError(problems)
    return Config(
        source=shown_path(config_file),
        listen=listen,
        admin=admin_settings,
        state=state_settings,
        org_header=org_header,
        client_ip_header=client_ip_header,
        policy_files=tuple(shown_path(p) for p in policy_files),
        upstreams=tuple(upstreams),
        shutdown_grace=shutdown_grace,
        log=log_settings,
        slack=slack,
        sentry=sentry,
        webhooks=tuple(d.webhook for d in hooks),
        webhooks_listen=webhooks_listen,
    )


def policy_trees(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, YNode]:
    """The YAML of each policy file of a loaded ``config``, with positions, for :func:`proxy.config.lint.lint`."""
    environ = os.environ if environ is None else environ
    trees: dict[str, YNode] = {}
    for file in config.policy_files:
        root = _read(Path(file), environ, [])
        if root is not None:
            trees[file] = root
    return trees


def _read(file: Path, environ: Mapping[str, str], problems: list[Problem]) -> YNode | None:
    try:
        data = file.read_bytes()
    except OSError as exc:
        problems.append(Problem(shown_path(file), 0, 0, "", f"cannot read: {exc.strerror or exc}"))
        return None
    text = decode(data, shown_path(file), problems)
    return None if text is None else parse_yaml(text, shown_path(file), environ, problems)


def _policy_files(top: Section, base: Path, problems: list[Problem]) -> list[Path]:
    """Expand ``policies:`` (files or directories, relative to the config file) into a sorted file list."""
    entries = top.list_of("policies", v.text, ("policies/",))
    files: list[Path] = []
    for index, entry in enumerate(entries):
        candidate = base / entry
        if candidate.is_dir():
            found = sorted(p for p in candidate.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
            files.extend(found)
        elif candidate.is_file():
            files.append(candidate)
        else:
            node = top.node("policies")
            mark = node.value[index].mark if node and isinstance(node.value, list) else top.mark_of("policies")
            top.error(mark, f"policies[{index}]", f"no such file or directory: {shown_path(candidate)}")
    return files


@dataclass(frozen=True)
class _Declared:
    """An upstream with where its name and prefix were written, for cross-file checks."""

    upstream: Upstream
    name_at: Mark
    prefix_at: Mark


def _read_policy_file(
    file: Path, environ: Mapping[str, str], problems: list[Problem], sidecar_headers: tuple[str, ...],
    hooks: list[DeclaredWebhook] | None = None,
) -> list[_Declared]:
    """The file's upstreams; its webhooks are appended to ``hooks``."""
    hooks = [] if hooks is None else hooks
    before = len(problems)
    root = _read(file, environ, problems)
    if root is None:
        if len(problems) == before:
            problems.append(Problem(shown_path(file), 1, 1, "", "empty policy file (expected 'upstreams:')"))
        return []
    top = Section(root, "", problems)
    if top.has("webhooks"):
        # Imported only here: the webhook model and its reader are over a quarter of the config package's
        # import time, which a sidecar whose policy files declare no webhook (the shipped ones) never needs.
        from proxy.config.webhook_reader import read_webhooks

        hooks.extend(read_webhooks(top, shown_path(file)))
    declared = [
        _Declared(_read_upstream(name, section, file, sidecar_headers), section.at, section.mark_of("prefix"))
        for name, section in (top.items("upstreams") if top.has("upstreams") or not top.has("webhooks") else ())
    ]
    top.finish()
    return declared


def _read_upstream(name: str, s: Section, file: Path, sidecar_headers: tuple[str, ...]) -> Upstream:
    """``sidecar_headers`` (the org and client IP headers) are the sidecar's: never sent upstream."""
    ca_bundle = s.get("ca_bundle", v.text, None)
    if ca_bundle is not None:
        resolved = file.parent / ca_bundle
        if not resolved.is_file():
            s.error(s.mark_of("ca_bundle"), f"{s.path}.ca_bundle", f"no such file: {shown_path(resolved)}")
        else:
            unusable = _unusable_ca_file(resolved)
            if unusable:
                s.error(s.mark_of("ca_bundle"), f"{s.path}.ca_bundle", f"cannot load {shown_path(resolved)}: {unusable}")
        ca_bundle = str(resolved)
    upstream = Upstream(
        name=name,
        url=s.get("url", v.upstream_url),
        prefix=s.get("prefix", v.prefix, f"/{name}"),
        timeout=s.get("timeout", _positive(v.duration), 10.0),
        connect_timeout=s.get("connect_timeout", _positive(v.duration), 2.0),
        max_request_body=s.get("max_request_body", v.size, 10 * 2**20),
        max_connections=s.get("max_connections", v.positive_int, 100),
        ca_bundle=ca_bundle,
        forwarded_headers=s.get("forwarded_headers", v.boolean, False),
        strip_headers=tuple(
            h.lower() for h in (*sidecar_headers, *s.list_of("strip_headers", v.header_name))
        ),
        source=shown_path(file),
        error_format=s.get("error_format", v.one_of(*ERROR_FORMATS), "generic"),
    )
    routes, default_route = read_routes(s)
    s.finish()
    return dataclasses.replace(upstream, routes=routes, default_route=default_route)


def _unusable_ca_file(path: Path) -> str:
    """Why ``path`` gives no CA certificate to trust ("" when it does): checked here, where the
    problem can name its line, rather than when the first connection fails."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError:
        return "no PEM certificate in it"
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


def _read_slack(alerts: Section) -> SlackSettings | None:
    """``alerts.slack``; absent, or with an empty token (``${SLACK_BOT_TOKEN:-}``), means no Slack."""
    slack = alerts.section("slack")
    alerts.finish()
    token = slack.get("token", str, "")
    settings = SlackSettings(
        token=token,
        channel=slack.get("channel", v.text, "") if token else slack.get("channel", str, ""),
        base_url=slack.get("base_url", v.upstream_url, "https://slack.com/api").rstrip("/") + "/",
        flap_interval=slack.get("flap_interval", v.duration, 600.0),
        error_rate=slack.get("error_rate", v.fraction, 0.0),
        error_window=slack.get("error_window", _positive(v.duration), 300.0),
        error_min_requests=slack.get("error_min_requests", v.positive_int, 20),
        webhook_backlog_age=slack.get("webhook_backlog_age", v.duration, 300.0),
        queue_size=slack.get("queue_size", v.positive_int, 100),
    )
    if token and not settings.channel:
        slack.error(slack.at, f"{slack.path}.channel", "is required")
    slack.finish()
    return settings if token else None


def _read_sentry(errors: Section) -> SentrySettings | None:
    """``errors.sentry``; an empty ``dsn`` (``${SENTRY_DSN:-}``) turns reporting off."""
    sentry = errors.section("sentry")
    errors.finish()
    dsn = sentry.get("dsn", str, "")
    if dsn:
        try:
            v.sentry_dsn(dsn)
        except ValueError as exc:
            sentry.error(sentry.mark_of("dsn"), f"{sentry.path}.dsn", str(exc))
    settings = SentrySettings(dsn=dsn, environment=sentry.get("environment", v.text, "production"),
                              release=sentry.get("release", v.text, None))
    sentry.finish()
    return settings if dsn else None


def _redis_timeout(value: object) -> float:
    """Milliseconds, never seconds: a request waits this long, once, when Redis hangs."""
    seconds = v.duration(value)
    if not 0 < seconds <= 1:
        raise ValueError(f"must be more than 0 and at most 1s (every request may wait this long once when "
                         f"Redis hangs), not '{value}'")
    return seconds


def _positive(parse):  # type: ignore[no-untyped-def]
    def check(value):  # type: ignore[no-untyped-def]
        parsed = parse(value)
        if parsed <= 0:
            raise ValueError(f"must be greater than zero, not '{value}'")
        return parsed

    return check


def _check_unique(declared: list[_Declared], problems: list[Problem], policies_at: Mark) -> None:
    if not declared and not problems:
        problems.append(Problem(policies_at.file, policies_at.line, policies_at.column, "policies",
                                "no upstreams defined in any policy file"))
    names: dict[str, _Declared] = {}
    prefixes: dict[str, _Declared] = {}
    for d in declared:
        name, prefix = d.upstream.name, d.upstream.prefix
        if name in names:
            first = names[name].name_at
            problems.append(Problem(d.name_at.file, d.name_at.line, d.name_at.column, f"upstreams.{name}",
                                    f"defined twice (first at {first.file}:{first.line})"))
        elif prefix in prefixes:
            other = prefixes[prefix].upstream.name
            problems.append(Problem(d.prefix_at.file, d.prefix_at.line, d.prefix_at.column,
                                    f"upstreams.{name}.prefix", f"'{prefix}' is already the prefix of upstream '{other}'"))
        names.setdefault(name, d)
        prefixes.setdefault(prefix, d)


