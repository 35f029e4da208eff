"""Shared by the inject tests: the shipped manifests, the CLI as a subprocess, kubernetes-validate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).with_name("manifests")


def documents(name: str = "workloads.yaml") -> list[Any]:
    return [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc is not None]


def run_cli(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``python -m proxy`` from this checkout (the venv's editable install may point at another worktree)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=60, env=env)


def kubernetes_versions() -> list[str]:
    """1.29 (native sidecars are on by default from 1.29) and the newest schema kubernetes-validate ships."""
    from kubernetes_validate.utils import latest_version

    return ["1.29.0", latest_version()]


def kubernetes_validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    """The real ``kubernetes-validate --strict`` command (misspelt or unknown keys fail)."""
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(path)],
                          capture_output=True, text=True, timeout=120)
