"""The pure injection: exact structure, idempotence, skips and the report."""

from __future__ import annotations

import copy

import pytest

from proxy.k8s.inject import CLASSIC_GRACE, Options, inject, parse_env, sidecar_container
from tests.k8s.helpers import documents

OPTIONS = Options(env=(("TWILIO_BASE_URL", "/twilio"), ("SLACK_BASE_URL", "/slack")))
IMAGE = "ghcr.io/resilience-proxy/resilience-proxy:0.1.0"


def _by_name(docs: list, name: str) -> dict:
    return next(d for d in docs if d.get("metadata", {}).get("name") == name)


def test_a_deployment_with_two_app_containers_gets_exactly_this() -> None:
    original = _by_name(documents(), "notifier")
    result = inject(original, OPTIONS)
    assert [str(o) for o in result.outcomes] == ["deployment/notifier injected: native"]
    assert result.obj["metadata"] == original["metadata"]  # the object's own metadata is not touched
    assert result.obj["spec"]["replicas"] == 2
    template = result.obj["spec"]["template"]
    assert template["metadata"] == {"labels": {"app": "notifier"}, "annotations": {
        "resilience-proxy.io/injected": "0.1.0", "resilience-proxy.io/injected-mode": "native"}}
    spec = template["spec"]
    assert list(spec) == ["containers", "volumes", "initContainers"]
    assert spec["containers"] == [
        {"name": "api", "image": "example/notifier:2.3", "ports": [{"containerPort": 3000}], "env": [
            {"name": "TWILIO_BASE_URL", "value": "http://127.0.0.1:8080/twilio"},  # replaced in place
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "SLACK_BASE_URL", "value": "http://127.0.0.1:8080/slack"}]},
        {"name": "worker", "image": "example/notifier:2.3", "args": ["worker"], "env": [
            {"name": "TWILIO_BASE_URL", "value": "http://127.0.0.1:8080/twilio"},
            {"name": "SLACK_BASE_URL", "value": "http://127.0.0.1:8080/slack"}]},
    ]
    assert spec["volumes"] == [
        {"name": "cache", "emptyDir": {}},
        {"name": "resilience-proxy-config", "configMap": {"name": "resilience-proxy-config"}},
        {"name": "resilience-proxy-tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    secret = [{"name": key, "valueFrom": {"secretKeyRef": {
        "name": "resilience-proxy-secrets", "key": key, "optional": True}}}
        for key in ("ADMIN_TOKEN", "SLACK_BOT_TOKEN", "SENTRY_DSN", "REDIS_URL")]
    assert spec["initContainers"] == [{
        "name": "resilience-proxy",
        "image": IMAGE,
        "args": ["run", "--config", "/etc/resilience-proxy/config.yaml"],
        "ports": [{"name": "rp-admin", "containerPort": 9901, "protocol": "TCP"}],
        "env": secret,
        "resources": {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "rp-admin"}, "periodSeconds": 1, "failureThreshold": 30},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "rp-admin"}, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "rp-admin"}, "periodSeconds": 5, "failureThreshold": 2},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "resilience-proxy-config", "mountPath": "/etc/resilience-proxy", "readOnly": True},
                         {"name": "resilience-proxy-tmp", "mountPath": "/tmp"}],
        "restartPolicy": "Always",
    }]
    assert original == _by_name(documents(), "notifier")  # the input is not mutated


def test_the_report_has_one_line_per_object_saying_why() -> None:
    lines = [str(o) for doc in documents() for o in inject(doc, OPTIONS).outcomes]
    assert lines == [
        "deployment/notifier injected: native",
        "cronjob/reminders injected: native",
        "statefulset/ledger injected: native",
        "service/ledger skipped: not a workload",
        "pod/node-probe skipped: hostNetwork: true: the sidecar's data port 127.0.0.1:8080 would be on the "
        "node's loopback",
        "deployment/legacy skipped: resilience-proxy.io/inject: disabled",
        "daemonset/shipper injected: classic",
        "job/backfill injected: native",
    ]


@pytest.mark.parametrize("mode", ["native", "classic"])
def test_injecting_twice_is_injecting_once(mode: str) -> None:
    for doc in documents():
        once = inject(doc, Options(mode=mode, env=OPTIONS.env))
        twice = inject(once.obj, Options(mode=mode, env=OPTIONS.env))
        assert twice.obj == once.obj
        assert all(o.status != "injected" for o in twice.outcomes), twice.outcomes


def test_a_second_run_reports_already_injected_and_keeps_the_first_mode() -> None:
    once = inject(_by_name(documents(), "notifier"), Options(mode="native"))
    again = inject(once.obj, Options(mode="classic"))
    assert again.obj == once.obj
    assert [str(o) for o in again.outcomes] == ["deployment/notifier unchanged: already injected (native)"]


def test_unchanged_and_skipped_objects_come_back_equal() -> None:
    for doc in documents():
        result = inject(doc, OPTIONS)
        if all(o.status == "skipped" for o in result.outcomes):
            assert result.obj == doc


def test_classic_mode_adds_a_second_container_that_stops_after_the_app() -> None:
    result = inject(_by_name(documents(), "shipper"))  # annotated resilience-proxy/mode: classic
    spec = result.obj["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["shipper", "resilience-proxy"]
    sidecar = spec["containers"][1]
    assert "restartPolicy" not in sidecar
    assert sidecar["lifecycle"] == {"preStop": {"exec": {"command": ["python", "-c", "import time; time.sleep(15)"]}}}
    assert spec["terminationGracePeriodSeconds"] == CLASSIC_GRACE == 45
    assert result.obj["spec"]["template"]["metadata"]["annotations"]["resilience-proxy.io/injected-mode"] == "classic"


def test_classic_mode_keeps_a_longer_grace_period() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"terminationGracePeriodSeconds": 120, "containers": [{"name": "a", "image": "x"}]}}
    assert inject(pod, Options(mode="classic")).obj["spec"]["terminationGracePeriodSeconds"] == 120


def test_a_classic_sidecar_is_refused_for_jobs() -> None:
    cronjob = _by_name(documents(), "reminders")
    result = inject(cronjob, Options(mode="classic"))
    assert result.obj == cronjob
    assert [str(o) for o in result.outcomes] == [
        "cronjob/reminders skipped: a classic sidecar never exits, so a run-to-completion pod would never complete: "
        "use --mode native (Kubernetes >= 1.29)"]
    run_once = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "once"},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "x"}]}}
    assert inject(run_once, Options(mode="classic")).outcomes[0].reason.startswith("a classic sidecar never exits")
    assert inject(run_once, Options(mode="native")).outcomes[0].status == "injected"


def test_a_cronjob_is_injected_in_its_job_template() -> None:
    result = inject(_by_name(documents(), "reminders"))
    template = result.obj["spec"]["jobTemplate"]["spec"]["template"]
    assert [c["name"] for c in template["spec"]["initContainers"]] == ["resilience-proxy"]
    assert template["metadata"]["annotations"]["resilience-proxy.io/injected"] == "0.1.0"


def test_a_native_sidecar_goes_before_existing_init_containers() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"initContainers": [{"name": "migrate", "image": "m"}], "containers": [{"name": "a", "image": "x"}]}}
    spec = inject(pod).obj["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["resilience-proxy", "migrate"]


def test_disabled_on_the_pod_template_wins_and_mode_annotations_are_checked() -> None:
    deployment = copy.deepcopy(_by_name(documents(), "notifier"))
    deployment["spec"]["template"]["metadata"]["annotations"] = {"resilience-proxy.io/inject": "disabled"}
    assert inject(deployment).outcomes[0].reason == "resilience-proxy.io/inject: disabled"
    deployment["spec"]["template"]["metadata"]["annotations"] = {"resilience-proxy.io/mode": "sidecar"}
    assert str(inject(deployment).outcomes[0]) == (
        "deployment/notifier skipped: resilience-proxy.io/mode: 'sidecar' is not native or classic")


@pytest.mark.parametrize(("where", "key", "status"), [
    ("template-label", "resilience-proxy.io/inject", "skipped"),  # what the webhook's objectSelector reads
    ("object-label", "resilience-proxy.io/inject", "skipped"),
    ("template-annotation", "resilience-proxy/inject", "skipped"),  # legacy prefix: an opt-out is still one
    ("object-annotation", "resilience-proxy/inject", "skipped"),
    ("template-annotation", "resilience-proxy.io/inject", "skipped"),
    ("template-label", "resilience-proxy/inject", "injected"),  # never a label we selected on
])
def test_one_prefix_for_the_label_and_annotations_and_the_legacy_opt_out_still_counts(
        where: str, key: str, status: str) -> None:
    deployment = copy.deepcopy(_by_name(documents(), "notifier"))
    owner, field = where.split("-")
    metadata = deployment["spec"]["template"]["metadata"] if owner == "template" else deployment["metadata"]
    metadata.setdefault(f"{field}s", {})[key] = "disabled"
    (outcome,) = inject(deployment).outcomes
    assert outcome.status == status, outcome


def test_the_legacy_mode_annotation_is_read_and_the_current_prefix_wins() -> None:
    deployment = copy.deepcopy(_by_name(documents(), "notifier"))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"] = {"resilience-proxy/mode": "classic"}
    assert str(inject(deployment).outcomes[0]) == "deployment/notifier injected: classic"
    annotations["resilience-proxy.io/mode"] = "native"
    result = inject(deployment)
    assert str(result.outcomes[0]) == "deployment/notifier injected: native"
    assert set(result.obj["spec"]["template"]["metadata"]["annotations"]) == {
        "resilience-proxy/mode", "resilience-proxy.io/mode", "resilience-proxy.io/injected",
        "resilience-proxy.io/injected-mode"}


def test_malformed_objects_are_skipped_not_crashed_on() -> None:
    assert str(inject({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}).outcomes[0]) == (
        "deployment/d skipped: no pod template at spec.template")
    assert str(inject({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}}).outcomes[0]) == (
        "pod/p skipped: no pod spec with containers")
    assert str(inject(["not", "an", "object"]).outcomes[0]) == "document/- skipped: not a Kubernetes object"


def test_parse_env() -> None:
    assert parse_env("TWILIO_BASE_URL=/twilio") == ("TWILIO_BASE_URL", "/twilio")
    with pytest.raises(ValueError, match="the prefix must start with '/'"):
        parse_env("TWILIO_BASE_URL=twilio")
    with pytest.raises(ValueError, match="write NAME=/prefix"):
        parse_env("/twilio")


def test_the_sidecar_spec_is_built_fresh_each_time() -> None:
    first = sidecar_container(IMAGE, "native")
    first["env"].append({"name": "X"})
    assert {"name": "X"} not in sidecar_container(IMAGE, "native")["env"]


def test_the_injection_logic_is_pure() -> None:
    """proxy.k8s.inject loads no I/O, YAML or JSON Patch library (fresh interpreter, as tests/test_layering.py)."""
    import subprocess
    import sys

    from tests.k8s.helpers import ROOT

    banned = ["asyncio", "aiohttp", "redis", "prometheus_client", "sentry_sdk", "slack_sdk", "yaml", "jsonpatch"]
    code = f"import sys, proxy.k8s.inject; print(','.join(m for m in {banned!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                            cwd=ROOT)
    assert result.stdout.strip() == ""
