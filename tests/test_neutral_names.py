"""What users copy names no customer: Slack channels in the shipped examples are ``#alerts``, workspaces ``example``.

A name copied from a real deployment into the README or a shipped config ends up in every user's config.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "README.md", ROOT / "config.example.yaml", *sorted((ROOT / "deploy").rglob("*.yaml")),
           *sorted((ROOT / "deploy").rglob("*.md")), *sorted((ROOT / "policies").glob("*.yaml")),
           ROOT / "tests" / "fake_slack.py", ROOT / "tests" / "observe" / "conftest.py"]
CHANNEL = re.compile(r"""(?:channel:\s*["']?|\bC[0-9A-Z]+ \(|=\s*["'])(#[\w-]+)""")
WORKSPACE = re.compile(r"https://([\w-]+)\.slack\.com|\bin ([A-Z]\w+)$|\"team\": \"(\w+)\"", re.MULTILINE)


def test_slack_channels_and_workspaces_in_shipped_files_are_neutral() -> None:
    channels, workspaces = {}, {}
    for path in SHIPPED:
        text = path.read_text()
        for match in CHANNEL.finditer(text):
            channels.setdefault(match.group(1), path.relative_to(ROOT))
        for match in WORKSPACE.finditer(text):
            name = next(group for group in match.groups() if group)
            workspaces.setdefault(name.lower(), path.relative_to(ROOT))
    assert channels and set(channels) == {"#alerts"}, channels
    assert set(workspaces) <= {"example"}, workspaces
