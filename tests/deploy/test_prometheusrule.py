"""deploy/prometheus/prometheusrule.yaml: generated from alerts.yaml (never drifting from it), rules that promtool
accepts, and the shape prometheus-operator's PrometheusRule CRD takes.

kubernetes-validate ships no schema for CRDs (it skips them with a warning), so the shape is checked here
against the CRD's fields (monitoring.coreos.com/v1 PrometheusRule): known keys only, as ``--strict`` would,
the types it declares, and its duration pattern.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.metrics_text import promtool

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
GENERATE = PROMETHEUS / "generate.py"
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
"""The CRD's pattern for ``for``, ``keep_firing_for`` and a group's ``interval``."""
GROUP_KEYS = {"name", "interval", "rules", "limit", "labels", "partial_response_strategy", "query_offset"}
RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def run_generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GENERATE), *args], capture_output=True, text=True, timeout=60, check=False)


def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load((PROMETHEUS / "prometheusrule.yaml").read_text()))


def test_the_committed_manifest_is_what_alerts_yaml_generates(tmp_path: Path) -> None:
    checked = run_generate("--check")
    assert checked.returncode == 0, checked.stderr
    fresh = tmp_path / "prometheusrule.yaml"
    assert run_generate("--output", str(fresh)).returncode == 0
    assert fresh.read_text() == (PROMETHEUS / "prometheusrule.yaml").read_text()
    assert manifest()["spec"] == yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())


def test_an_edit_to_alerts_yaml_makes_the_check_fail(tmp_path: Path) -> None:
    edited = tmp_path / "alerts.yaml"
    edited.write_text((PROMETHEUS / "alerts.yaml").read_text().replace("for: 5m", "for: 6m", 1))
    stale = run_generate("--check", "--source", str(edited), "--output", str(PROMETHEUS / "prometheusrule.yaml"))
    assert stale.returncode == 1
    assert "is out of date" in stale.stderr and "python deploy/prometheus/generate.py" in stale.stderr
    regenerated = tmp_path / "prometheusrule.yaml"
    assert run_generate("--source", str(edited), "--output", str(regenerated)).returncode == 0
    assert yaml.safe_load(regenerated.read_text())["spec"]["groups"][0]["rules"][0]["for"] == "6m"


def test_a_rule_file_of_several_documents_is_refused_and_nothing_written(tmp_path: Path) -> None:
    odd = tmp_path / "alerts.yaml"
    odd.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: |\n      up\n    for: 1m\n---\ngroups: []\n")
    result = run_generate("--source", str(odd), "--output", str(tmp_path / "out.yaml"))
    assert result.returncode == 1 and not (tmp_path / "out.yaml").exists()
    assert result.stderr.startswith(f"{odd}: "), result.stderr


def test_promtool_accepts_the_manifests_rules(tmp_path: Path) -> None:
    groups = tmp_path / "rules.yaml"
    groups.write_text(yaml.safe_dump({"groups": manifest()["spec"]["groups"]}, sort_keys=False))
    result = promtool("check", "rules", str(groups))
    assert result.returncode == 0, result.stdout + result.stderr
    written = sum(len(group["rules"]) for group in manifest()["spec"]["groups"])
    assert written >= 8 and f"SUCCESS: {written} rules found" in result.stdout


def test_the_manifest_has_the_crds_shape() -> None:
    document = manifest()
    assert set(document) == {"apiVersion", "kind", "metadata", "spec"}
    assert (document["apiVersion"], document["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert set(document["metadata"]) == {"name", "labels"} and DNS_1123.match(document["metadata"]["name"])
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in document["metadata"]["labels"].items())
    assert set(document["spec"]) == {"groups"}
    names = [group["name"] for group in document["spec"]["groups"]]
    assert len(names) == len(set(names)), "the CRD keys groups by name"
    for group in document["spec"]["groups"]:
        assert set(group) <= GROUP_KEYS and isinstance(group["name"], str) and group["name"], group.get("name")
        for rule in group["rules"]:
            where = f"{group['name']}: {rule.get('alert') or rule.get('record')}"
            assert set(rule) <= RULE_KEYS, where
            assert ("alert" in rule) != ("record" in rule), where
            assert isinstance(rule["expr"], str) and rule["expr"].strip(), where
            for key in ("for", "keep_firing_for"):
                assert key not in rule or DURATION.match(rule[key]), f"{where}: {key} {rule[key]!r}"
            for key in ("labels", "annotations"):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in rule.get(key, {}).items()), where
