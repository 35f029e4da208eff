"""The command line as users run it: a real subprocess each time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m proxy`` from this checkout even when ``cwd`` is elsewhere (the venv's editable install may
    point at another worktree)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_validate_the_shipped_example() -> None:
    result = run_cli("validate", "--config", "config.example.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "config.example.yaml: OK: 2 upstreams from 2 policy files: google (/google), twilio (/twilio)\n")


def test_validate_reports_every_error_with_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "twilio.yaml").write_text(
        "upstreams:\n  twilio:\n    url: https://api.twilio.com\n    prefix: /twilio\n    timeout: 30\n"
        "    retries: 3\n")
    (tmp_path / "config.yaml").write_text("listen: 127.0.0.1:8080\nadmin:\n  listen: localhost\n")
    result = run_cli("validate", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "config.yaml:3:3: admin.listen: invalid address 'localhost' (write host:port, e.g. 127.0.0.1:8080)",
        "policies/twilio.yaml:5:5: upstreams.twilio.timeout: invalid duration '30' (write 250ms, 30s, 15m or 1h)",
        "policies/twilio.yaml:6:5: upstreams.twilio.retries: unknown key",
        "config.yaml: 3 errors",
    ]


def test_validate_prints_errors_then_warnings_and_fails_on_errors(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "twilio.yaml").write_text(
        "upstreams:\n  twilio:\n    url: https://api.twilio.com\n    retry: {deadline: 1s}\n"
        "    routes:\n      - {name: all}\n      - {name: sms, methods: [POST]}\n")
    (tmp_path / "config.yaml").write_text("{}\n")
    result = run_cli("validate", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "policies/twilio.yaml:7:9: upstreams.twilio.routes[1]: route 'sms' can never match: route 'all' (routes[0]) "
        "takes every request it would",
        "policies/twilio.yaml:4:13: warning: upstreams.twilio.retry.deadline: deadline 1s is shorter than one attempt "
        "(the upstream's timeout 10s): a first attempt that times out leaves no time to retry",
        "config.yaml: 1 error, 1 warning",
    ]


def test_validate_passes_with_warnings_unless_strict(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "api.yaml").write_text(
        "upstreams:\n  api:\n    url: https://api.example.com\n    retry: {deadline: 1s}\n")
    (tmp_path / "config.yaml").write_text("{}\n")
    warning = ("policies/api.yaml:4:13: warning: upstreams.api.retry.deadline: deadline 1s is shorter than one "
               "attempt (the upstream's timeout 10s): a first attempt that times out leaves no time to retry")
    relaxed = run_cli("validate", "--config", "config.yaml", cwd=tmp_path)
    assert relaxed.returncode == 0
    assert relaxed.stderr.splitlines() == [warning]
    assert relaxed.stdout == "config.yaml: OK: 1 upstreams from 1 policy file: api (/api) (1 warning)\n"
    strict = run_cli("validate", "--strict", "--config", "config.yaml", cwd=tmp_path)
    assert strict.returncode == 1
    assert strict.stderr.splitlines() == [warning, "config.yaml: 0 errors, 1 warning"]


def test_validate_a_missing_file() -> None:
    result = run_cli("validate", "--config", "/nonexistent/config.yaml")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == "/nonexistent/config.yaml: cannot read: No such file or directory"


def test_run_refuses_a_bad_config_before_listening(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("listen: nowhere\npolicies: []\n")
    result = run_cli("run", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "config.yaml:1:1: listen: invalid address 'nowhere'" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("resilience-proxy")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "run" in result.stdout and "validate" in result.stdout


def test_run_on_a_busy_port_fails_with_a_clear_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "policies").mkdir()
        (tmp_path / "policies" / "api.yaml").write_text("upstreams:\n  api:\n    url: http://127.0.0.1:9\n")
        (tmp_path / "config.yaml").write_text(f"listen: 127.0.0.1:{port}\nadmin:\n  listen: 127.0.0.1:0\n")
        result = run_cli("run", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "address already in use" in result.stderr
