"""The webhook examples users copy: the commented blocks in the shipped presets and the README's
config load once uncommented (with their secrets set), and the presets still load as shipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proxy.config.load import load_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {"TWILIO_AUTH_TOKEN": "t0ken", "GOOGLE_CHANNEL_TOKEN": "ch4nnel", "BILLING_WEBHOOK_SECRET": "s3cret"}


def uncommented(text: str) -> str:
    """The file with its commented ``webhooks:`` block (the indented lines after it) turned on."""
    head, marker, tail = text.partition("# webhooks:\n")
    assert marker, "no commented webhooks: block"
    lines = tail.splitlines(keepends=True)
    block = 0
    while block < len(lines) and lines[block].startswith("#   "):
        block += 1
    return head + "webhooks:\n" + "".join(line[2:] for line in lines[:block]) + "".join(lines[block:])


def test_the_presets_load_as_shipped_without_webhook_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    config = load_config("config.example.yaml", {})
    assert config.webhooks == () and config.webhooks_listen is None


def test_the_presets_commented_webhooks_load_once_uncommented(tmp_path: Path) -> None:
    for preset in ("twilio.yaml", "google-calendar.yaml"):
        (tmp_path / preset).write_text(uncommented((ROOT / "policies" / preset).read_text()))
    config_text = uncommented((ROOT / "config.example.yaml").read_text())
    config_text = re.sub(r"(?m)^policies:.*$", "policies: [twilio.yaml, google-calendar.yaml]", config_text)
    (tmp_path / "config.yaml").write_text(config_text)
    config = load_config(tmp_path / "config.yaml", ENV)
    assert str(config.webhooks_listen) == "0.0.0.0:8081"
    assert [(w.name, w.provider, w.mode) for w in config.webhooks] == [
        ("twilio_status", "twilio", "queue"), ("twilio_inbound", "twilio", "sync"), ("calendar_push", "google", "queue")]
    status = config.webhooks[0]
    assert status.twilio is not None and status.twilio.public_url == "https://app.example.com/hooks/twilio/status"
    assert config.slack is None  # the example's token is empty


def test_the_readme_webhooks_example_loads(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Inbound webhooks\n", 1)[1]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    listen, policy = blocks[0], blocks[1]
    (tmp_path / "hooks.yaml").write_text("upstreams:\n  twilio: {url: 'https://api.twilio.com'}\n" + policy)
    (tmp_path / "config.yaml").write_text(listen + "policies: [hooks.yaml]\n")
    config = load_config(tmp_path / "config.yaml", ENV)
    assert [w.name for w in config.webhooks] == ["twilio_status", "twilio_inbound", "calendar_push", "billing"]
