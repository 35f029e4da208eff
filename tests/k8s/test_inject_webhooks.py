"""``inject --webhooks-port``: the sidecar's inbound-webhooks listener as a named container port, only
when asked, idempotent, in either mode, valid for the Kubernetes schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.k8s.inject import Options, inject, parse_port
from tests.k8s.helpers import MANIFESTS, documents, kubernetes_validate, kubernetes_versions, run_cli

WEBHOOKS = {"name": "rp-webhooks", "containerPort": 8081, "protocol": "TCP"}


def sidecar_ports(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    [sidecar] = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "resilience-proxy"]
    return sidecar["ports"]


@pytest.mark.parametrize("mode", ["native", "classic"])
def test_the_port_is_declared_only_when_asked_and_only_once(mode: str) -> None:
    notifier = documents()[0]
    plain = inject(notifier, Options(mode=mode)).obj
    assert [p["name"] for p in sidecar_ports(plain)] == ["rp-admin"]
    with_port = inject(notifier, Options(mode=mode, webhooks_port=8081)).obj
    assert sidecar_ports(with_port) == [{"name": "rp-admin", "containerPort": 9901, "protocol": "TCP"}, WEBHOOKS]
    assert inject(with_port, Options(mode=mode, webhooks_port=8081)).obj == with_port
    # Added to a pod injected before without it; a new number replaces the old one.
    assert sidecar_ports(inject(plain, Options(mode=mode, webhooks_port=8081)).obj)[1] == WEBHOOKS
    moved = inject(with_port, Options(mode=mode, webhooks_port=9443)).obj
    assert sidecar_ports(moved)[1] == {**WEBHOOKS, "containerPort": 9443}


def test_a_bad_port_is_refused_with_what_to_write() -> None:
    assert parse_port("8081") == 8081
    for text, message in [("http", "--webhooks-port 'http': write a port number from 1 to 65535, e.g. 8081"),
                          ("70000", "--webhooks-port '70000': write a port number from 1 to 65535, e.g. 8081"),
                          ("9901", "--webhooks-port 9901: the sidecar already uses it (8080 data, 9901 admin); "
                                   "e.g. 8081")]:
        with pytest.raises(ValueError) as caught:
            parse_port(text)
        assert str(caught.value) == message
    result = run_cli("inject", "--webhooks-port", "8080", "-", stdin="")
    assert result.returncode == 2
    assert result.stderr == "--webhooks-port 8080: the sidecar already uses it (8080 data, 9901 admin); e.g. 8081\n"


@pytest.mark.parametrize("version", kubernetes_versions())
def test_injected_with_the_webhooks_port_passes_kubernetes_validate_strict(tmp_path: Path, version: str) -> None:
    result = run_cli("inject", "--webhooks-port", "8081", str(MANIFESTS / "workloads.yaml"))
    assert result.returncode == 0, result.stderr
    flat = []
    for doc in yaml.safe_load_all(result.stdout):
        flat.extend(doc["items"] if doc["kind"] == "List" else [doc])
    assert sidecar_ports(flat[0])[1] == WEBHOOKS
    injected = tmp_path / "injected.yaml"
    injected.write_text(yaml.safe_dump_all(flat, sort_keys=False))
    check = kubernetes_validate(injected, version)
    assert check.returncode == 0, check.stdout + check.stderr
