"""The shipped Prometheus alert rules: valid (``promtool check rules``) and doing what their unit tests say.

The rule tests (``deploy/prometheus/alerts_test.yaml``) feed synthetic series; the names they use
must be the names the sidecar exposes, which the last test checks against a real scrape.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import yaml
from prometheus_client import generate_latest

from proxy.k8s.webhook import InjectorMetrics
from tests.conftest import StartSidecar, admin_url
from tests.metrics_text import promtool, typed_names

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def test_the_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES / "alerts.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    written = sum(len(group["rules"]) for group in yaml.safe_load((RULES / "alerts.yaml").read_text())["groups"])
    assert f"SUCCESS: {written} rules found" in result.stdout  # promtool read every rule written


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(RULES / "alerts_test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


async def test_the_rules_use_only_metric_names_the_sidecar_exposes(
    http: aiohttp.ClientSession, start_sidecar: StartSidecar, scripted
) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}})
    async with http.get(admin_url(sidecar) + "/metrics") as response:
        exposed = typed_names(await response.text())
    used = set(re.findall(r"\bresilience_proxy_(?!injector_)\w+", (RULES / "alerts.yaml").read_text()))
    assert used and used <= exposed, f"not exposed: {used - exposed}"


def test_the_injector_rules_use_only_metric_names_the_injector_exposes() -> None:
    exposed = typed_names(generate_latest(InjectorMetrics().registry).decode())
    used = set(re.findall(r"\bresilience_proxy_injector_\w+", (RULES / "alerts.yaml").read_text()))
    assert used and used <= exposed, f"not exposed: {used - exposed}"
