"""``resilience-proxy inject`` as users run it, and its output against the Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proxy.k8s.inject import Options, inject
from tests.k8s.helpers import MANIFESTS, documents, kubernetes_validate, kubernetes_versions, run_cli

WORKLOADS = MANIFESTS / "workloads.yaml"
REPORT = [
    "deployment/notifier injected: native",
    "cronjob/reminders injected: native",
    "statefulset/ledger injected: native",
    "service/ledger skipped: not a workload",
    "pod/node-probe skipped: hostNetwork: true: the sidecar's data port 127.0.0.1:8080 would be on the node's "
    "loopback",
    "deployment/legacy skipped: resilience-proxy.io/inject: disabled",
    "daemonset/shipper injected: classic",
    "job/backfill injected: native",
]


def test_inject_from_stdin_prints_every_document_and_reports_on_stderr() -> None:
    result = run_cli("inject", "--env", "TWILIO_BASE_URL=/twilio", "-", stdin=WORKLOADS.read_text())
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == REPORT
    out = list(yaml.safe_load_all(result.stdout))
    options = Options(env=(("TWILIO_BASE_URL", "/twilio"),))
    assert out == [inject(doc, options).obj for doc in documents()]
    # skipped documents come back as they were
    assert out[3] == documents()[3] and out[4] == documents()[4]


def test_inject_twice_is_byte_for_byte_inject_once(tmp_path: Path) -> None:
    once = run_cli("inject", "--env", "TWILIO_BASE_URL=/twilio", str(WORKLOADS))
    assert once.returncode == 0, once.stderr
    twice = run_cli("inject", "--env", "TWILIO_BASE_URL=/twilio", stdin=once.stdout)  # no FILE: stdin
    assert twice.returncode == 0, twice.stderr
    assert twice.stdout == once.stdout
    assert "deployment/notifier unchanged: already injected (native)" in twice.stderr.splitlines()
    assert "daemonset/shipper unchanged: already injected (classic)" in twice.stderr.splitlines()


def test_inject_reads_several_files_and_keeps_key_order(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text("kind: Pod\napiVersion: v1\nmetadata:\n  name: solo\nspec:\n  containers:\n"
                   "  - name: app\n    image: example/app:1\n")
    result = run_cli("inject", "--mode", "classic", "--image", "registry.local/rp:dev", str(pod), str(WORKLOADS))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "pod/solo injected: classic"
    assert result.stdout.startswith("kind: Pod\napiVersion: v1\nmetadata:\n  name: solo\n")
    first = next(yaml.safe_load_all(result.stdout))
    assert first["spec"]["containers"][1]["image"] == "registry.local/rp:dev"
    assert "cronjob/reminders skipped: a classic sidecar never exits" in result.stderr


def test_inject_errors() -> None:
    missing = run_cli("inject", "/nonexistent/k8s.yaml")
    assert missing.returncode == 1
    assert missing.stderr == "/nonexistent/k8s.yaml: cannot read: No such file or directory\n"
    bad_env = run_cli("inject", "--env", "TWILIO_BASE_URL", "-", stdin="")
    assert bad_env.returncode == 2
    assert bad_env.stderr == "--env 'TWILIO_BASE_URL': write NAME=/prefix, e.g. TWILIO_BASE_URL=/twilio\n"
    not_yaml = run_cli("inject", "-", stdin="kind: [\n")
    assert not_yaml.returncode == 1 and not_yaml.stderr.startswith("-: not YAML:")


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize("mode", ["native", "classic"])
def test_injected_manifests_pass_kubernetes_validate_strict(tmp_path: Path, version: str, mode: str) -> None:
    result = run_cli("inject", "--mode", mode, "--env", "TWILIO_BASE_URL=/twilio", str(WORKLOADS))
    assert result.returncode == 0, result.stderr
    # kubernetes-validate has no schema for List: check its items as documents of their own
    flat = []
    for doc in yaml.safe_load_all(result.stdout):
        flat.extend(doc["items"] if doc["kind"] == "List" else [doc])
    injected = tmp_path / "injected.yaml"
    injected.write_text(yaml.safe_dump_all(flat, sort_keys=False))
    check = kubernetes_validate(injected, version)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("passed for resource") == 8, check.stdout


def test_kubernetes_validate_would_catch_a_misspelt_key(tmp_path: Path) -> None:
    """The check above means something: --strict rejects an unknown key in the sidecar."""
    doc = inject(documents()[0]).obj
    doc["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert kubernetes_validate(bad, "1.29.0").returncode != 0
