"""deploy/k8s/injector: valid for Kubernetes (strict), and its parts name each other consistently."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from proxy.k8s.inject import DEFAULT_IMAGE
from tests.k8s.helpers import ROOT, kubernetes_validate, kubernetes_versions

DIR = ROOT / "deploy" / "k8s" / "injector"
KUBERNETES_FILES = ["namespace.yaml", "service.yaml", "deployment.yaml", "pdb.yaml", "webhook.yaml"]


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DIR / name).read_text()) if doc]


@pytest.mark.parametrize("version", kubernetes_versions())
def test_the_manifests_pass_kubernetes_validate_strict(version: str) -> None:
    for name in KUBERNETES_FILES:
        result = kubernetes_validate(DIR / name, version)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "passed for resource" in result.stdout


def test_the_kustomization_lists_the_files() -> None:
    (kustomization,) = load("kustomization.yaml")
    assert kustomization["resources"] == KUBERNETES_FILES


def test_the_webhook_never_blocks_and_reaches_the_service() -> None:
    (config,) = load("webhook.yaml")
    (hook,) = config["webhooks"]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None" and hook["failurePolicy"] == "Ignore"
    assert hook["namespaceSelector"] == {"matchLabels": {"resilience-proxy.io/inject": "enabled"}}
    assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    (service,) = load("service.yaml")
    target = hook["clientConfig"]["service"]
    assert (target["name"], target["namespace"], target["path"]) == (
        service["metadata"]["name"], service["metadata"]["namespace"], "/mutate")
    assert target["port"] == service["spec"]["ports"][0]["port"]
    issuer, certificate = load("cert-manager.yaml")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}")
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc" in certificate["spec"]["dnsNames"]


def test_the_injector_deployment_is_hardened_and_uses_its_certificate() -> None:
    (deployment,) = load("deployment.yaml")
    (service,) = load("service.yaml")
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["labels"]["resilience-proxy.io/inject"] == "disabled"
    (container,) = template["spec"]["containers"]
    assert container["image"] == DEFAULT_IMAGE
    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    args = container["args"]
    assert args[0] == "injector"
    (mount,) = container["volumeMounts"]
    assert args[args.index("--tls-cert") + 1] == f"{mount['mountPath']}/tls.crt"
    assert args[args.index("--tls-key") + 1] == f"{mount['mountPath']}/tls.key"
    assert "subPath" not in mount  # a subPath mount never receives the renewed certificate
    (volume,) = template["spec"]["volumes"]
    _, certificate = load("cert-manager.yaml")
    assert volume == {"name": mount["name"], "secret": {"secretName": certificate["spec"]["secretName"]}}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args[args.index("--listen") + 1].endswith(f":{ports['https']}")
    # The certificate's expiry is scraped from the plain-HTTP metrics port.
    assert args[args.index("--metrics-listen") + 1].endswith(f":{ports['metrics']}")
    annotations = template["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (str(ports["metrics"]), "/metrics")


def test_a_disruption_budget_keeps_one_injector_up() -> None:
    (budget,) = load("pdb.yaml")
    (deployment,) = load("deployment.yaml")
    assert budget["kind"] == "PodDisruptionBudget" and budget["spec"]["minAvailable"] == 1
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["replicas"] > budget["spec"]["minAvailable"]
