"""Start, probe and stop the benchmark's child processes.

Every child gets its own session (process group) so that stopping it also stops whatever it forked
(nginx workers, sidecar helpers), and is pinned with taskset so load and proxy never share a core.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redisstats


class ServiceError(RuntimeError):
    """A child failed to start or to become ready; the message carries its log tail."""


@dataclass
class Service:
    """A running child process and the file holding its stdout+stderr."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        """Last lines of the child's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def pinned(cpu: int | str, cmd: list[str]) -> list[str]:
    """Prefix a command with taskset so it (and its children) run on one core (or a list: ``"0,1"``)."""
    return ["taskset", "-c", str(cpu), *cmd]


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(leader: int) -> float:
    """User + system CPU seconds used so far by ``leader`` and every process it started (the sidecar with
    its ``--workers``, which lead process groups of their own; nginx with its worker), threads and reaped
    children included. Read from /proc: the CPU a target spent per request is far less disturbed by a busy
    machine than its request rate is."""
    stats: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry.name)] = (int(fields[1]), fields)  # fields[1]: the parent's pid
    tree, grown = {leader}, True
    while grown:
        grown = False
        for pid, (parent, _) in stats.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grown = True
    total = sum(sum(int(n) for n in stats[pid][1][11:15]) for pid in tree if pid in stats)  # own + reaped children
    return total / _TICK


def free_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on now, the OS's picks, all different (held open together)."""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(socket.create_server(("127.0.0.1", 0))) for _ in range(count)]
        return [server.getsockname()[1] for server in servers]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens there: we would otherwise benchmark a stranger."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def prepare_runner(args: Any, ports: Iterable[int], prefix: str) -> Path:
    """What a bench runner does before starting anything: SIGTERM unwinds (so ``finally`` blocks stop the
    children), proxy and load share core 0 on a 1-CPU machine, the runner itself stays on the load CPU,
    every port must be free (else exit, naming them), and a fresh directory for configs and logs
    (world-readable: nginx workers drop root privileges and must still reach their prefix)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if (os.cpu_count() or 1) < 2:
        args.proxy_cpu = args.load_cpu = 0
    os.sched_setaffinity(0, {args.load_cpu})
    busy = [port for port in ports if port_in_use(port)]
    if busy:
        sys.exit(f"ports already in use on 127.0.0.1: {busy} (stop whatever listens there or pick other --*-port)")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    tmp.chmod(0o755)
    return tmp


def start(name: str, cmd: list[str], cpu: int | str, logdir: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> Service:
    """Launch a pinned child in its own process group, output to logdir/name.log."""
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            pinned(cpu, cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    return Service(name, proc, log)


def stop(service: Service, grace: float = 5.0) -> None:
    """SIGTERM the whole process group, SIGKILL it if it lingers."""
    if service.proc.poll() is None:
        _signal_group(service.proc.pid, signal.SIGTERM)
        try:
            service.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(service.proc.pid, signal.SIGKILL)  # leftovers of the group, if any
    if service.proc.poll() is None:
        service.proc.wait(grace)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def http_status(port: int, path: str, timeout: float = 1.0) -> int:
    """Status of one GET on loopback (raises OSError when nothing answers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def http_text(port: int, path: str, timeout: float = 1.0) -> str:
    """Body of one GET on loopback, whatever its status (raises OSError when nothing answers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode(errors="replace")
    finally:
        conn.close()


def wait_ready(service: Service, port: int, path: str, deadline: float = 15.0) -> None:
    """Poll GET port/path until it answers 200; fail fast, with its log, if the child exits."""

    def probe() -> str | None:
        status = http_status(port, path)
        return None if status == 200 else f"HTTP {status}"

    _wait(service, probe, f":{port}{path}", deadline)


def wait_redis(service: Service, port: int, deadline: float = 10.0) -> None:
    """Poll PING on port until Redis answers PONG; fail fast, with its log, if it exits."""
    _wait(service, lambda: None if redisstats.ping(port) else "no PONG", f":{port} (PING)", deadline)


def _wait(service: Service, probe: Callable[[], str | None], what: str, deadline: float) -> None:
    """Call probe (None means ready, else why not) every 0.1 s until ready, the deadline, or the child's exit."""
    end = time.monotonic() + deadline
    last = "no answer"
    while time.monotonic() < end:
        if service.proc.poll() is not None:
            raise ServiceError(f"{service.name} exited with code {service.proc.returncode}:\n{service.tail()}")
        try:
            reason = probe()
            if reason is None:
                return
            last = reason
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise ServiceError(f"{service.name} not ready on {what} after {deadline:.0f} s ({last}):\n{service.tail()}")
