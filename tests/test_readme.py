"""The README's first screen works as written: its commands run here (those that need no network), its one test
command is the one ``.ci/run`` finds, and its table of contents lists every section.

The sidecar runs from a copy of ``config.example.yaml`` on free ports (other tests on this machine may hold
8080/9901), and the smoke test's URLs are rewritten to match; everything else is the README's text.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FIRST_SCREEN = README[: README.index("\n## ")]
CI_TEST_COMMAND = re.compile(r"^python -m pip install -e .*pytest.*$", re.MULTILINE)
"""What ``.ci/run`` looks for (its sed expression)."""


def commands(text: str) -> list[tuple[str, str]]:
    """(command, comment) for each line of the ``sh`` blocks in ``text``."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            command, _, comment = line.partition("  #")
            found.append((command.strip(), comment.strip().lstrip("#").strip()))
    return found


def needs_network(command: str) -> bool:
    return command.startswith("python -m pip install")


def test_the_ci_finds_exactly_one_test_command_and_it_is_on_the_first_screen() -> None:
    assert len(CI_TEST_COMMAND.findall(README)) == 1
    assert CI_TEST_COMMAND.search(FIRST_SCREEN)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "sed -n 's/^\\(python -m pip install -e .*pytest.*\\)$/\\1/p' README.md" in ci, "the rule this test copies"


def test_the_contents_list_every_section_with_a_working_anchor() -> None:
    contents = README[README.index("## Contents"):]
    contents = contents[: contents.index("\n## ", 1)]
    links = re.findall(r"^- \[(.+)\]\(#([\w-]+)\)$", contents, re.MULTILINE)
    sections = [h for h in re.findall(r"^## (.+)$", README, re.MULTILINE) if h != "Contents"]
    assert [title for title, _ in links] == sections
    for title, anchor in links:  # GitHub's rule: lower case, punctuation dropped, spaces become dashes
        assert anchor == re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-"), title


def test_the_first_screen_makes_a_virtualenv_first(tmp_path: Path) -> None:
    [venv] = [command for command, _ in commands(FIRST_SCREEN) if "venv" in command]
    assert commands(FIRST_SCREEN)[0][0] == venv, "before any pip install"
    script = f'{venv} && python -m pip --version >&2 && python -c "import sys; print(sys.prefix)"'
    result = subprocess.run(["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / ".venv"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's smoke test uses curl")
def test_the_example_runs_and_passes_the_smoke_test_without_credentials(tmp_path: Path) -> None:
    data, admin = free_port(), free_port()
    ports = {"127.0.0.1:8080": f"127.0.0.1:{data}", "127.0.0.1:9901": f"127.0.0.1:{admin}"}

    def local(text: str) -> str:
        for shipped, free in ports.items():
            text = text.replace(shipped, free)
        return text

    example = (ROOT / "config.example.yaml").read_text()
    assert all(port in example for port in ports), "the example listens where the README says"
    (tmp_path / "config.example.yaml").write_text(local(example))
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    screen = commands(FIRST_SCREEN)
    [run] = [part.strip() for command, _ in screen for part in command.split("&&") if "resilience-proxy run" in part]
    smoke = [(local(command), comment) for command, comment in screen if command.startswith("curl")]
    assert len(smoke) >= 2
    bin_dir = Path(sys.executable).parent  # where this environment's resilience-proxy script is
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    sidecar = subprocess.Popen(["bash", "-c", f"exec {run}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        _wait_ready(smoke[0][0], sidecar)
        for command, comment in smoke:
            result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True,
                                    timeout=30, check=False)
            assert result.returncode == 0 and result.stdout.strip(), f"{command}: {result.stderr}"
            if comment.startswith("{"):
                assert result.stdout.strip() == comment, command
        sidecar.send_signal(signal.SIGINT)  # Ctrl-C
        assert sidecar.wait(timeout=30) == 0
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
        output = sidecar.communicate()[0]
    assert '"msg":"drained"' in output


def _wait_ready(readyz: str, sidecar: subprocess.Popen[str], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    probe = ["bash", "-c", readyz.replace("curl -s", "curl -sf")]
    while subprocess.run(probe, capture_output=True, check=False).returncode:
        assert sidecar.poll() is None, sidecar.communicate()[0]
        assert time.monotonic() < end, "the example never became ready"
        time.sleep(0.1)
