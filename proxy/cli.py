"""The ``resilience-proxy`` command: ``run``, ``validate``, ``schema``, ``doctor``, ``inject``, ``injector``,
and the admin port's clients ``status`` and ``breakers`` (:mod:`proxy.ctl`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from proxy import IMAGE, __version__
from proxy.config.load import load_config, policy_trees
from proxy.ctl.breakers import add_breakers_command
from proxy.ctl.status import add_status_command
from proxy.errors import ERROR, ConfigError

log = logging.getLogger("resilience_proxy")


def _run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until a handler for it is in place: never a kill
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.watch_interval < 0:
        print("--watch-interval must be 0 (off) or more", file=sys.stderr)
        return 2
    if args.workers == 1:
        single_process_metrics()
        from proxy.runtime.process import run_worker

        return run_worker(args.config, watch_interval=args.watch_interval)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    from proxy.observe.logs import configure_logging
    from proxy.runtime.workers import supervise

    configure_logging(config.log.level)
    return supervise(args.config, args.workers, args.watch_interval)


def single_process_metrics() -> None:
    """One process keeps its metrics in memory, whatever the environment says.

    prometheus-client picks file-backed values (its multiprocess mode, several times slower per
    increment) at import when ``PROMETHEUS_MULTIPROC_DIR`` is set; only ``--workers N`` needs them, and
    the supervisor sets that variable for its workers itself. An inherited one (an older image or
    manifest) is dropped before prometheus-client is imported.
    """
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(name, None)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _validate(args: argparse.Namespace) -> int:
    """Exit 1 on errors (load or lint), and on warnings too with ``--strict``; errors print before warnings."""
    from proxy.config.lint import lint  # only here and in doctor: ``run`` never lints, so never loads it

    try:
        config = load_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"{args.config}: {_plural(len(error.problems), 'error')}", file=sys.stderr)
        return 1
    problems = lint(config, policy_trees(config))
    errors = sum(1 for p in problems if p.severity == ERROR)
    warnings = len(problems) - errors
    for problem in problems:
        print(problem, file=sys.stderr)
    if errors or (warnings and args.strict):
        print(f"{args.config}: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}", file=sys.stderr)
        return 1
    names = ", ".join(f"{u.name} ({u.prefix})" for u in config.upstreams)
    files = len(config.policy_files)
    print(f"{config.source}: OK: {len(config.upstreams)} upstreams from {_plural(files, 'policy file')}: {names}"
          + (f" ({_plural(warnings, 'warning')})" if warnings else ""))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from proxy.config.schema import config_schema, policy_schema, render

    sys.stdout.write(render(config_schema() if args.config else policy_schema()))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from proxy.doctor import doctor

    return doctor(args.config, skip_network=args.skip_network, send_test_alert=args.send_test_alert,
                  strict=args.strict, output=args.output)


def _inject_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from proxy.k8s.inject import Options, parse_env, parse_port

    return Options(mode=args.mode, image=args.image, env=tuple(parse_env(spec) for spec in args.env),
                   webhooks_port=None if args.webhooks_port is None else parse_port(args.webhooks_port))


def _inject(args: argparse.Namespace) -> int:
    """Read YAML documents from files or stdin, write them all injected to stdout, a report to stderr."""
    import yaml

    from proxy.k8s.inject import inject

    try:
        options = _inject_options(args)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    documents = []
    for source in args.files or ["-"]:
        try:
            if source == "-":
                text = sys.stdin.read()
            else:
                with open(source, encoding="utf-8") as file:
                    text = file.read()
            documents.extend(doc for doc in yaml.safe_load_all(text) if doc is not None)
        except OSError as error:
            print(f"{source}: cannot read: {error.strerror}", file=sys.stderr)
            return 1
        except yaml.YAMLError as error:
            print(f"{source}: not YAML: {error}", file=sys.stderr)
            return 1
    injected = []
    for document in documents:
        result = inject(document, options)
        injected.append(result.obj)
        for outcome in result.outcomes:
            print(outcome, file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(injected, sort_keys=False, default_flow_style=False))
    return 0


def _injector(args: argparse.Namespace) -> int:
    from proxy.k8s.webhook import serve_injector

    try:
        options = _inject_options(args)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if args.reload_interval <= 0:
        print("--reload-interval must be more than 0", file=sys.stderr)
        return 2
    single_process_metrics()
    return serve_injector(args.listen, args.tls_cert, args.tls_key, options, metrics_listen=args.metrics_listen,
                          reload_interval=args.reload_interval)


def _add_inject_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["native", "classic"], default="native",
                        help="native: an init container with restartPolicy: Always (Kubernetes >= 1.29); classic: "
                             "a second container (an object's resilience-proxy.io/mode annotation wins)")
    parser.add_argument("--image", default=IMAGE, help=f"sidecar image (default {IMAGE})")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=/PREFIX",
                        help="set NAME=http://127.0.0.1:8080/PREFIX in the app containers (repeatable)")
    parser.add_argument("--webhooks-port", metavar="PORT",
                        help="declare the inbound-webhooks listener as container port rp-webhooks (the config's "
                             "webhooks.listen must be 0.0.0.0:PORT)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resilience-proxy", description="Resilience sidecar for third-party HTTP APIs.")
    parser.add_argument("--version", action="version", version=f"resilience-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve until SIGTERM/SIGINT, then drain")
    run.add_argument("--config", required=True, help="process config file (YAML)")
    run.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    run.add_argument("--watch-interval", type=float, default=0.5, metavar="SECONDS",
                     help="how often to look for changed config files (0: only SIGHUP and POST /admin/reload)")
    run.set_defaults(handler=_run)
    validate = commands.add_parser("validate", help="check the config and policy files, print every error")
    validate.add_argument("--config", required=True, help="process config file (YAML)")
    validate.add_argument("--strict", action="store_true", help="fail on warnings too")
    validate.set_defaults(handler=_validate)
    schema = commands.add_parser("schema", help="print the JSON Schema (draft 2020-12) of the policy files")
    schema.add_argument("--config", action="store_true", help="the schema of the process config instead")
    schema.set_defaults(handler=_schema)
    check = commands.add_parser(
        "doctor", help="check production readiness: config, Redis, Lua, Slack, Sentry, upstreams, admin, listeners",
        description="Each check prints PASS, WARN, FAIL or SKIP. Exit 0 when nothing failed (warnings allowed), "
                    "1 on any FAIL, 2 on a WARN with --strict.")
    check.add_argument("--config", required=True, help="process config file (YAML)")
    check.add_argument("--skip-network", action="store_true",
                       help="skip every check that leaves the machine (Redis, Slack, Sentry host, upstreams)")
    check.add_argument("--send-test-alert", action="store_true",
                       help="also post one Slack message and one Sentry event")
    check.add_argument("--strict", action="store_true", help="exit 2 when a check warns")
    check.add_argument("-o", "--output", choices=["table", "json"], default="table",
                       help="table (default; each row as soon as it is known) or json (one document at the end)")
    check.set_defaults(handler=_doctor)
    inject = commands.add_parser(
        "inject", help="add the sidecar to Kubernetes YAML (files or - for stdin) and print it",
        description="Handles Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and List; every "
                    "document is printed, a report line per object goes to stderr. Injecting twice changes nothing.")
    inject.add_argument("files", nargs="*", metavar="FILE", help="YAML files, - for stdin (the default)")
    _add_inject_options(inject)
    inject.set_defaults(handler=_inject)
    injector = commands.add_parser("injector", help="serve the mutating admission webhook that injects pods (TLS)")
    injector.add_argument("--tls-cert", required=True, help="server certificate (PEM)")
    injector.add_argument("--tls-key", required=True, help="its private key (PEM)")
    injector.add_argument("--listen", default="0.0.0.0:8443", help="host:port (default 0.0.0.0:8443)")
    injector.add_argument("--metrics-listen", default="0.0.0.0:9901",
                          help="plain-HTTP host:port for /metrics and /healthz (default 0.0.0.0:9901)")
    injector.add_argument("--reload-interval", type=float, default=10.0, metavar="SECONDS",
                          help="how often to look for a renewed certificate (default 10)")
    _add_inject_options(injector)
    injector.set_defaults(handler=_injector)
    add_status_command(commands)
    add_breakers_command(commands)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
