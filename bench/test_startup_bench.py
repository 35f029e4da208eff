"""Checks for bench/startup.py: each variant runs the shipped example config as it claims (read back by the
sidecar's own loader), the readings from /proc are what they say, and the table's ratios are this tree's
median over the baseline's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import startup

from proxy.config.load import load_config


@pytest.mark.parametrize("variant", startup.VARIANTS)
def test_variant_is_the_shipped_example_config(tmp_path: Path, variant: str) -> None:
    conf = tmp_path / "config.yaml"
    conf.write_text(startup.example_config(startup.REPO_DIR, variant, 18390, 18391))
    config = load_config(conf, environ=startup.environment(startup.REPO_DIR, variant, 18392))
    assert (str(config.listen), str(config.admin.listen)) == ("127.0.0.1:18390", "127.0.0.1:18391")
    assert sorted(u.name for u in config.upstreams) == ["google", "twilio"]  # the shipped policies/
    if variant == "example":
        assert (config.state.backend, config.sentry, config.slack) == ("memory", None, None)
    else:
        assert (config.state.backend, config.state.redis_url) == ("redis", "redis://127.0.0.1:18392/0")
        assert config.sentry is not None and config.slack is not None
        assert config.slack.base_url.startswith("http://127.0.0.1:")  # never the real Slack


def test_the_example_variant_takes_nothing_from_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in startup.CONFIG_ENV:
        monkeypatch.setenv(name, "x")
    env = startup.environment(startup.REPO_DIR, "example", 18392)
    assert not set(startup.CONFIG_ENV) & set(env)
    assert env["PYTHONPATH"] == str(startup.REPO_DIR)


def test_proc_readings_of_this_process() -> None:
    memory = startup.rss_kib(os.getpid())
    assert 0 < memory["VmRSS"] <= memory["VmHWM"]
    assert startup.cpu_seconds(os.getpid()) > 0


def test_medians_and_ratios_against_the_baseline() -> None:
    def run(ready: float, cpu: float, rss: int) -> dict[str, float]:
        return {"ready_s": ready, "cpu_s": cpu, "rss_kib": rss, "peak_kib": rss}

    raw = {"example": [run(0.5, 0.4, 40960), run(0.6, 0.5, 40960), run(9.0, 9.0, 40960)],
           "example@baseline": [run(1.0, 0.8, 51200), run(1.2, 1.0, 51200), run(1.1, 0.9, 51200)],
           "floor": [run(0.3, 0.2, 30720)]}
    summary = startup.medians(raw)
    assert summary["example"] == {"ready_s": 0.6, "cpu_s": 0.5, "rss_mib": 40.0, "peak_mib": 40.0}
    lines = startup.table(summary, markdown=True).splitlines()
    assert lines[2] == "| example | 0.600 | 0.50 | 40.0 | 40.0 | 0.55x | 0.56x | 0.80x |"
    assert lines[4] == "| floor | 0.300 | 0.20 | 30.0 | 30.0 |  |  |  |"
