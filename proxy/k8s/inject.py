"""Add the resilience-proxy sidecar to Kubernetes objects: pure (a dict in, a new dict out, no I/O).

Every step *ensures* something (a container named ``resilience-proxy``, three volumes, annotations, app env),
so injecting an injected object changes nothing: ``inject(inject(x)) == inject(x)``. Used by the
``inject`` command (YAML files) and by the admission webhook (pods).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from proxy import IMAGE as DEFAULT_IMAGE
from proxy import __version__

CONTAINER = "resilience-proxy"
CONFIG_VOLUME = "resilience-proxy-config"
CONFIG_MAP = "resilience-proxy-config"
CONFIG_MOUNT = "/etc/resilience-proxy"
TMP_VOLUME = "resilience-proxy-tmp"
SECRET = "resilience-proxy-secrets"
SECRET_KEYS = ("ADMIN_TOKEN", "SLACK_BOT_TOKEN", "SENTRY_DSN", "REDIS_URL")
DATA_URL = "http://127.0.0.1:8080"
ADMIN_PORT = 9901
ADMIN_PORT_NAME = "rp-admin"
WEBHOOKS_PORT_NAME = "rp-webhooks"
"""The inbound-webhooks listener's named port (``webhooks.listen``), declared only when asked for."""

# One prefix, a domain we own, for the namespace/pod label the webhook selects on and for the annotations
# (as linkerd.io/inject and sidecar.istio.io/inject).
PREFIX = "resilience-proxy.io/"
ANNOTATION_INJECT = PREFIX + "inject"
ANNOTATION_MODE = PREFIX + "mode"
ANNOTATION_INJECTED = PREFIX + "injected"
ANNOTATION_INJECTED_MODE = PREFIX + "injected-mode"
LABEL_INJECT = PREFIX + "inject"
# Still read (never written): manifests annotated before 0.2 said ``resilience-proxy/inject: disabled``;
# ignoring that opt-out would inject pods their owners excluded.
LEGACY_PREFIX = "resilience-proxy/"
MODES = ("native", "classic")

# Classic mode: the sidecar waits PRESTOP_WAIT before it is sent SIGTERM, so the app (stopped in parallel)
# finishes its calls first; then the sidecar drains for up to shutdown_grace (20 s by default). As in
# deploy/k8s/overlays/classic.
PRESTOP_WAIT = 15
SHUTDOWN_GRACE = 20
CLASSIC_GRACE = PRESTOP_WAIT + SHUTDOWN_GRACE + 10

TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
JOB_KINDS = ("Job", "CronJob")


@dataclass(frozen=True)
class Options:
    """What to inject: the default mode (an object's ``resilience-proxy.io/mode`` annotation wins), the image,
    and app env vars ``(NAME, "/prefix")`` pointed at the sidecar's data port."""

    mode: str = "native"
    image: str = DEFAULT_IMAGE
    env: tuple[tuple[str, str], ...] = ()
    version: str = __version__
    webhooks_port: int | None = None
    """Declare the sidecar's webhooks listener as the container port ``rp-webhooks`` (the config's
    ``webhooks.listen`` must use the same port on 0.0.0.0); None: no such port."""


@dataclass(frozen=True)
class Outcome:
    """One line of the report: an object and what happened to it."""

    kind: str
    name: str
    status: str  # "injected", "unchanged" or "skipped"
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.kind.lower()}/{self.name} {self.status}"
        return f"{text}: {self.reason}" if self.reason else text


@dataclass
class Result:
    """The new object and one outcome per object seen (a List yields one per item)."""

    obj: Any
    outcomes: list[Outcome] = field(default_factory=list)


def parse_env(spec: str) -> tuple[str, str]:
    """``NAME=/prefix`` to ``(NAME, "/prefix")``; ValueError naming what is wrong."""
    name, sep, prefix = spec.partition("=")
    if not sep or not name or not (name[0].isalpha() or name[0] == "_") \
            or not all(c.isalnum() or c == "_" for c in name):
        raise ValueError(f"--env {spec!r}: write NAME=/prefix, e.g. TWILIO_BASE_URL=/twilio")
    if not prefix.startswith("/"):
        raise ValueError(f"--env {spec!r}: the prefix must start with '/', e.g. {name}=/twilio")
    return name, prefix


def inject(obj: Any, options: Options = Options()) -> Result:
    """Inject one object (a Pod, a workload, a List of them); anything else comes back as it was."""
    result = Result(copy.deepcopy(obj))
    _inject_into(result.obj, options, result.outcomes)
    return result


def _inject_into(obj: Any, options: Options, outcomes: list[Outcome]) -> None:
    if not isinstance(obj, dict):
        outcomes.append(Outcome("Document", "-", "skipped", "not a Kubernetes object"))
        return
    kind = str(obj.get("kind") or "Unknown")
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = str(metadata.get("name") or metadata.get("generateName") or "-")
    if kind == "List" or (kind.endswith("List") and isinstance(obj.get("items"), list)):
        for item in obj.get("items") or []:
            _inject_into(item, options, outcomes)
        return
    if kind == "Pod":
        pod = obj
    elif kind in TEMPLATE_PATHS:
        pod = obj
        for key in TEMPLATE_PATHS[kind]:
            pod = pod.get(key) if isinstance(pod, dict) else None
        if not isinstance(pod, dict):
            outcomes.append(Outcome(kind, name, "skipped", f"no pod template at {'.'.join(TEMPLATE_PATHS[kind])}"))
            return
    else:
        outcomes.append(Outcome(kind, name, "skipped", "not a workload"))
        return
    outcomes.append(_inject_pod(kind, name, obj, pod, options))


def _annotations(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def _labels(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return labels if isinstance(labels, dict) else {}


def _wanted(obj: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    """``inject`` and ``mode`` as asked for. Later wins: the object, then its pod template; a label
    (``inject`` only, current prefix only: the one the webhook selects on), then an annotation; the
    legacy prefix, then the current one."""
    wanted: dict[str, str] = {}
    for owner in (obj, pod):
        keys = ((_labels(owner), "inject", (PREFIX,)),
                *((_annotations(owner), key, (LEGACY_PREFIX, PREFIX)) for key in ("inject", "mode")))
        for source, key, prefixes in keys:
            for prefix in prefixes:
                if source.get(prefix + key) is not None:
                    wanted[key] = str(source[prefix + key])
    return wanted


def _inject_pod(kind: str, name: str, obj: dict[str, Any], pod: dict[str, Any], options: Options) -> Outcome:
    wanted = _wanted(obj, pod)
    if wanted.get("inject", "").lower() == "disabled":
        return Outcome(kind, name, "skipped", f"{ANNOTATION_INJECT}: disabled")
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list):
        return Outcome(kind, name, "skipped", "no pod spec with containers")
    if spec.get("hostNetwork") is True:
        return Outcome(kind, name, "skipped",
                       "hostNetwork: true: the sidecar's data port 127.0.0.1:8080 would be on the node's loopback")
    mode = wanted.get("mode") or options.mode
    if mode not in MODES:
        return Outcome(kind, name, "skipped", f"{ANNOTATION_MODE}: {mode!r} is not native or classic")
    existing = _find_sidecar(spec)
    if existing is not None:
        mode = existing  # already there: keep its mode, never add a second one
    elif mode == "classic" and (kind in JOB_KINDS or spec.get("restartPolicy") in ("Never", "OnFailure")):
        return Outcome(kind, name, "skipped",
                       "a classic sidecar never exits, so a run-to-completion pod would never complete: use "
                       "--mode native (Kubernetes >= 1.29)")
    before = copy.deepcopy(pod)
    if existing is None:
        sidecar = sidecar_container(options.image, mode)
        if mode == "native":
            spec["initContainers"] = [sidecar, *(spec.get("initContainers") or [])]
        else:
            spec["containers"].append(sidecar)
    if mode == "classic":
        grace = spec.get("terminationGracePeriodSeconds")
        if not isinstance(grace, int) or grace < CLASSIC_GRACE:
            spec["terminationGracePeriodSeconds"] = CLASSIC_GRACE
    _ensure_volumes(spec)
    _ensure_app_env(spec, options.env)
    if options.webhooks_port is not None:
        _ensure_webhooks_port(spec, options.webhooks_port)
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):
        metadata = pod["metadata"] = {}
    if not isinstance(metadata.get("annotations"), dict):
        metadata["annotations"] = {}
    metadata["annotations"].setdefault(ANNOTATION_INJECTED, options.version)
    metadata["annotations"].setdefault(ANNOTATION_INJECTED_MODE, mode)
    if pod == before:
        return Outcome(kind, name, "unchanged", f"already injected ({mode})")
    return Outcome(kind, name, "injected", mode)


def _find_sidecar(spec: dict[str, Any]) -> str | None:
    """The mode of the sidecar already in the pod, or None."""
    for key, mode in (("initContainers", "native"), ("containers", "classic")):
        for container in spec.get(key) or []:
            if isinstance(container, dict) and container.get("name") == CONTAINER:
                return mode
    return None


def _ensure_volumes(spec: dict[str, Any]) -> None:
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        volumes = spec["volumes"] = []
    names = {v.get("name") for v in volumes if isinstance(v, dict)}
    volumes.extend(volume for volume in sidecar_volumes() if volume["name"] not in names)


def sidecar_volumes() -> list[dict[str, Any]]:
    """The pod volumes the sidecar mounts (deploy/k8s/base declares the same; tests/deploy checks it).

    The root filesystem is read-only: ``/tmp`` (an emptyDir) is the only writable place; ``--workers N``
    keeps its metric files in a directory it creates there.
    """
    return [{"name": CONFIG_VOLUME, "configMap": {"name": CONFIG_MAP}},
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}]


def parse_port(text: str) -> int:
    """``--webhooks-port``: 1-65535 and not a port the sidecar already uses; ValueError naming what is wrong."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"--webhooks-port {text!r}: write a port number from 1 to 65535, e.g. 8081")
    if int(text) in (ADMIN_PORT, 8080):
        raise ValueError(f"--webhooks-port {text}: the sidecar already uses it (8080 data, {ADMIN_PORT} admin); "
                         "e.g. 8081")
    return int(text)


def _ensure_webhooks_port(spec: dict[str, Any], port: int) -> None:
    """The sidecar container declares ``rp-webhooks`` on ``port`` (replacing another number, never twice)."""
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict) or container.get("name") != CONTAINER:
                continue
            ports = container.get("ports")
            if not isinstance(ports, list):
                ports = container["ports"] = []
            for entry in ports:
                if isinstance(entry, dict) and entry.get("name") == WEBHOOKS_PORT_NAME:
                    entry["containerPort"] = port
                    return
            ports.append({"name": WEBHOOKS_PORT_NAME, "containerPort": port, "protocol": "TCP"})
            return


def _ensure_app_env(spec: dict[str, Any], env: tuple[tuple[str, str], ...]) -> None:
    """Set each ``NAME`` to the sidecar URL in every app container (replacing a value, keeping the order)."""
    for container in spec["containers"]:
        if not isinstance(container, dict) or container.get("name") == CONTAINER:
            continue
        for name, prefix in env:
            value = DATA_URL + prefix
            entries = container.get("env")
            if not isinstance(entries, list):
                entries = container["env"] = []
            for entry in entries:
                if isinstance(entry, dict) and entry.get("name") == name:
                    entry.pop("valueFrom", None)
                    entry["value"] = value
                    break
            else:
                entries.append({"name": name, "value": value})


def sidecar_container(image: str, mode: str) -> dict[str, Any]:
    """The sidecar's container spec: the one source for the CLI, the webhook and deploy/k8s (whose
    base and classic overlay tests/deploy renders and compares with this)."""
    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": ADMIN_PORT_NAME}, "periodSeconds": period,
                "failureThreshold": failures}

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "args": ["run", "--config", CONFIG_MOUNT + "/config.yaml"],
        # The data port 8080 listens on 127.0.0.1 only and is not declared: a Service could not reach it.
        "ports": [{"name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "env": [{"name": key, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key, "optional": True}}}
                for key in SECRET_KEYS],
        # No CPU limit: throttling a proxy adds latency to every call (deploy/k8s/README.md).
        "resources": {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "startupProbe": probe("/healthz", 1, 30),
        "livenessProbe": probe("/healthz", 10, 3),
        "readinessProbe": probe("/readyz", 5, 2),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
    }
    if mode == "native":
        # An init container that keeps running: started (startupProbe passed) before the app containers,
        # stopped after them.
        container["restartPolicy"] = "Always"
    else:
        container["lifecycle"] = {"preStop": {"exec": {"command": [
            "python", "-c", f"import time; time.sleep({PRESTOP_WAIT})"]}}}
    return container
