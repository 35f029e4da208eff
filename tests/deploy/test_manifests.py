"""deploy/k8s/: schema validation with kubernetes-validate --strict, and the checks a schema cannot make
(selectors against labels, probes against the admin routes, the ConfigMap against the sidecar's own loader,
hardening, the image tag)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config.load import load_config
from proxy.k8s.inject import sidecar_container, sidecar_volumes
from tests.deploy.render import K8S, KUSTOMIZATIONS, REPO, kustomize_command, render, render_subset

# Native sidecars validate from 1.28 (feature gate) and are on by default from 1.29; 1.37 is the newest
# schema kubernetes-validate ships.
VERSIONS = ["1.29.0", "1.33.0", "1.37.0"]
ADMIN_PORT = 9901
ADMIN_PATHS = {"/healthz", "/readyz"}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"ghcr.io/resilience-proxy/resilience-proxy:{VERSION}"


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(KUSTOMIZATIONS[request.param])


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d["spec"]["template"] for d in of_kind(objects, "Deployment")]


def sidecar(template: dict[str, Any]) -> dict[str, Any] | None:
    spec = template["spec"]
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "resilience-proxy"]
    return found[0] if found else None


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_validate_strict(rendered: tuple[str, list[dict[str, Any]]], version: str, tmp_path: Path) -> None:
    name, objects = rendered
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(manifest)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {o["kind"] for o in objects}
    passed = result.stdout.count(" passed for resource ")
    # Every object but the PodMonitor (a CRD: no schema shipped, skipped with a warning) was checked.
    assert passed == len(objects) - len(of_kind(objects, "PodMonitor")), result.stdout
    assert ("PodMonitor" in kinds) == ("Couldn't find schema for kind PodMonitor" in result.stdout)


@pytest.mark.parametrize("version", ["1.25.0", "1.27.0", "1.28.0"])
def test_classic_overlay_validates_before_native_sidecars(version: str, tmp_path: Path) -> None:
    """overlays/classic exists for clusters without native sidecars: it must be valid there."""
    manifest = tmp_path / "classic.yaml"
    manifest.write_text(yaml.safe_dump_all(render(KUSTOMIZATIONS["classic"])))
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(manifest)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_subset_renderer_matches_kustomize() -> None:
    if kustomize_command() is None:
        pytest.skip("no kustomize or kubectl: the manifests were rendered by tests/deploy/render.py alone")
    from tests.deploy.render import render_kustomize
    for directory in KUSTOMIZATIONS.values():
        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        assert sorted(render_subset(directory), key=key) == sorted(render_kustomize(directory), key=key)


def test_deployment_selectors_match_template_labels(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    for deployment in of_kind(objects, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert matches(selector, deployment["spec"]["template"]["metadata"]["labels"]), deployment["metadata"]


def test_service_and_policy_selectors_match_a_pod(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    labels = [t["metadata"]["labels"] for t in pod_specs(objects)]
    for service in of_kind(objects, "Service"):
        assert any(matches(service["spec"]["selector"], lab) for lab in labels), service["metadata"]
        # Named target ports exist on a selected pod.
        templates = [t for t in pod_specs(objects) if matches(service["spec"]["selector"], t["metadata"]["labels"])]
        ports = {p["name"] for t in templates for c in t["spec"]["containers"] + t["spec"].get("initContainers", [])
                 for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert not isinstance(port["targetPort"], str) or port["targetPort"] in ports, port
    for policy in of_kind(objects, "NetworkPolicy"):
        assert any(matches(policy["spec"]["podSelector"]["matchLabels"], lab) for lab in labels)
    for monitor in of_kind(objects, "PodMonitor"):
        [template] = [t for t in pod_specs(objects)
                      if matches(monitor["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])]
        admin = next(p for p in sidecar(template)["ports"] if p["name"] == monitor["spec"]["podMetricsEndpoints"][0]["port"])
        assert admin["containerPort"] == ADMIN_PORT
        assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_probes_point_at_admin_routes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    templates = [t for t in pod_specs(objects) if sidecar(t)]
    assert templates
    for template in templates:
        container = sidecar(template)
        named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in expected.items():
            get = container[probe]["httpGet"]
            assert get["path"] == path and path in ADMIN_PATHS
            assert named.get(get["port"], get["port"]) == ADMIN_PORT
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ADMIN_PORT) and annotations["prometheus.io/path"] == "/metrics"


def test_sidecar_shape(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendered
    [template] = [t for t in pod_specs(objects) if sidecar(t)]
    spec, container = template["spec"], sidecar(template)
    assert container["image"] == IMAGE
    if name == "classic":
        assert "initContainers" not in spec and spec["containers"][-1] is container
        assert "restartPolicy" not in container
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        wait = float(sleep[-1].rsplit("(", 1)[1].rstrip(")"))
        config = yaml.safe_load(next(o for o in of_kind(objects, "ConfigMap"))["data"]["config.yaml"])
        grace = float(config["shutdown_grace"].rstrip("s"))
        assert spec["terminationGracePeriodSeconds"] >= wait + grace
    else:
        assert container in spec["initContainers"] and container["restartPolicy"] == "Always"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert "PROMETHEUS_MULTIPROC_DIR" not in env  # one worker keeps its metrics in memory
    for key in ("ADMIN_TOKEN", "SLACK_BOT_TOKEN", "SENTRY_DSN", "REDIS_URL"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "resilience-proxy-secrets", "key": key,
                                                         "optional": True}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/resilience-proxy"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/etc/resilience-proxy"]["name"]]["configMap"]["name"] == "resilience-proxy-config"
    # Read-only root: /tmp, where --workers N creates its metrics directory, is an emptyDir.
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_the_sidecar_is_exactly_what_inject_adds(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """One container spec: the manifests and `resilience-proxy inject` (and the webhook) never drift apart."""
    name, objects = rendered
    [template] = [t for t in pod_specs(objects) if sidecar(t)]
    mode = "classic" if name == "classic" else "native"
    container = sidecar(template)
    if name == "webhooks":  # the overlay's own additions: the listener's port (as inject --webhooks-port) and its secrets
        container = {**container, "ports": [p for p in container["ports"] if p["name"] != "rp-webhooks"],
                     "env": [e for e in container["env"] if e["name"] not in ("TWILIO_AUTH_TOKEN", "GOOGLE_CHANNEL_TOKEN")]}
    assert container == sidecar_container(IMAGE, mode)
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert [volumes.get(v["name"]) for v in sidecar_volumes()] == sidecar_volumes()


def test_configmap_loads_with_the_sidecars_loader(rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    name, objects = rendered
    [configmap] = of_kind(objects, "ConfigMap")
    assert configmap["metadata"]["name"] == "resilience-proxy-config"
    [template] = [t for t in pod_specs(objects) if sidecar(t)]
    [volume] = [v for v in template["spec"]["volumes"] if v.get("configMap", {}).get("name") == "resilience-proxy-config"]
    # Lay the ConfigMap out as the kubelet projects it: mounted whole, one file per key (as
    # `resilience-proxy inject` mounts it too, not knowing a user's keys).
    assert "items" not in volume["configMap"]
    for key, text in configmap["data"].items():
        (tmp_path / key).write_text(text)
    # The webhook secrets come from resilience-proxy-secrets (not optional there).
    environ = {"TWILIO_AUTH_TOKEN": "t", "GOOGLE_CHANNEL_TOKEN": "g"} if name == "webhooks" else {}
    config = load_config(tmp_path / "config.yaml", environ=environ)
    assert str(config.admin.listen) == "0.0.0.0:9901" and str(config.listen) == "127.0.0.1:8080"
    assert {u.name for u in config.upstreams} == {"twilio", "google"}
    webhooks = ["webhooks.yaml"] if name == "webhooks" else []
    assert sorted(Path(f).name for f in config.policy_files) == ["google-calendar.yaml", "twilio.yaml", *webhooks]
    assert config.state.backend == ("redis" if name in ("with-redis", "webhooks") else "memory")


def test_policy_copies_equal_the_presets() -> None:
    for preset in (REPO / "policies").glob("*.yaml"):
        assert (K8S / "base" / "policies" / preset.name).read_text() == preset.read_text(), preset.name


def test_k8s_config_differs_from_the_example_only_in_admin_listen_and_policy_paths() -> None:
    example = yaml.safe_load((REPO / "config.example.yaml").read_text())
    k8s = yaml.safe_load((K8S / "base" / "config.yaml").read_text())
    example["admin"]["listen"] = "0.0.0.0:9901"
    example["policies"] = ["twilio.yaml", "google-calendar.yaml"]  # the ConfigMap's keys, mounted flat
    assert k8s == example


def test_the_webhooks_overlay_admits_the_listener_from_the_ingress_only() -> None:
    """Ingress -> Service -> the sidecar's rp-webhooks port, which the config's webhooks.listen serves."""
    objects = render(KUSTOMIZATIONS["webhooks"])
    [template] = [t for t in pod_specs(objects) if sidecar(t)]
    ports = {p["name"]: p["containerPort"] for p in sidecar(template)["ports"]}
    config = yaml.safe_load(next(o for o in of_kind(objects, "ConfigMap"))["data"]["config.yaml"])
    assert config["webhooks"]["listen"] == f"0.0.0.0:{ports['rp-webhooks']}"
    [service] = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "example-app-webhooks"]
    assert service["spec"]["ports"][0]["targetPort"] == "rp-webhooks"
    [ingress] = of_kind(objects, "Ingress")
    [path] = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"]["name"] == "example-app-webhooks" and path["path"] == "/hooks/"
    hooks = yaml.safe_load(next(o for o in of_kind(objects, "ConfigMap"))["data"]["webhooks.yaml"])["webhooks"]
    host = ingress["spec"]["rules"][0]["host"]
    for hook in hooks.values():
        assert hook["path"].startswith("/hooks/")
        if "twilio" in hook:  # the URL Twilio signs is the ingress's
            assert hook["twilio"]["public_url"] == f"https://{host}{hook['path']}"
    [policy] = [p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "example-app-webhooks"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": ports["rp-webhooks"]}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    # No other policy opens the webhooks port.
    others = [r for p in of_kind(objects, "NetworkPolicy") if p is not policy for r in p["spec"].get("ingress", [])]
    assert all(port["port"] != ports["rp-webhooks"] for r in others for port in r.get("ports", []))
