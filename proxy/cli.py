"""The ``resilience-proxy`` command: ``run`` and ``validate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from proxy.config.load import load_config
from proxy.errors import ConfigError

log = logging.getLogger("resilience_proxy")


def _loop_factory():  # type: ignore[no-untyped-def]
    """uvloop where it is installed (it is a dependency; PyPy or Windows may lack it)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_worker(config_path: str, *, reuse_port: bool = False, watch_interval: float = 0.5,
               supervisor: int | None = None) -> int:
    """Load the config and serve until a stop signal; the exit status."""
    # SIGHUP means "reload" once serving; until the loop's handler is installed, it must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    from proxy.observe.logs import configure_logging
    from proxy.server import serve

    configure_logging(config.log.level)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, reuse_port=reuse_port, watch_interval=watch_interval or None,
                             supervisor=supervisor))
    except OSError as error:
        log.error("cannot start: %s", error)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until a handler for it is in place: never a kill
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.watch_interval < 0:
        print("--watch-interval must be 0 (off) or more", file=sys.stderr)
        return 2
    if args.workers == 1:
        return run_worker(args.config, watch_interval=args.watch_interval)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    from proxy.observe.logs import configure_logging
    from proxy.workers import supervise

    configure_logging(config.log.level)
    return supervise(args.config, args.workers, args.watch_interval)


def _validate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        count = len(error.problems)
        print(f"{args.config}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    names = ", ".join(f"{u.name} ({u.prefix})" for u in config.upstreams)
    files = len(config.policy_files)
    print(f"{config.source}: OK: {len(config.upstreams)} upstreams from {files} policy file{'s' if files != 1 else ''}: {names}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resilience-proxy", description="Resilience sidecar for third-party HTTP APIs.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve until SIGTERM/SIGINT, then drain")
    run.add_argument("--config", required=True, help="process config file (YAML)")
    run.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    run.add_argument("--watch-interval", type=float, default=0.5, metavar="SECONDS",
                     help="how often to look for changed config files (0: only SIGHUP and POST /admin/reload)")
    run.set_defaults(handler=_run)
    validate = commands.add_parser("validate", help="check the config and policy files, print every error")
    validate.add_argument("--config", required=True, help="process config file (YAML)")
    validate.set_defaults(handler=_validate)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
