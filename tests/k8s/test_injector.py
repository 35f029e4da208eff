"""The admission webhook over real TLS on loopback, with a test CA the client verifies."""

from __future__ import annotations

import base64
import copy
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
import trustme
import yaml
from aiohttp import web

from proxy.k8s.certs import server_ssl_context
from proxy.k8s.inject import Options, inject
from proxy.k8s.webhook import make_app
from tests.k8s.helpers import ROOT, kubernetes_validate

OPTIONS = Options(env=(("TWILIO_BASE_URL", "/twilio"),))


def pod() -> dict[str, Any]:
    """A pod as the API server sends it for a Deployment's ReplicaSet (generateName, no name yet)."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "notifier-7d9f8c6b5-", "namespace": "shop",
                     "labels": {"app": "notifier", "pod-template-hash": "7d9f8c6b5"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "notifier-7d9f8c6b5",
                                          "uid": "0d1c5f3e-1111-4a2b-9c3d-123456789abc", "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {
            "containers": [{"name": "api", "image": "example/notifier:2.3", "resources": {},
                            "terminationMessagePath": "/dev/termination-log",
                            "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                            "volumeMounts": [{"name": "kube-api-access-x1", "readOnly": True,
                                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "securityContext": {}, "schedulerName": "default-scheduler",
            "volumes": [{"name": "kube-api-access-x1", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
        },
        "status": {},
    }


def review(obj: Any, uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "a1b2", "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": obj, "oldObject": None, "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


@pytest.fixture
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()  # verifies the chain and the host name (127.0.0.1)
    ca.configure_trust(context)
    return context


@pytest.fixture
async def url(tls_files: tuple[Path, Path]) -> AsyncIterator[str]:
    runner = web.AppRunner(make_app(OPTIONS))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(*map(str, tls_files)))
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def post_review(url: str, client_ssl: ssl.SSLContext, body: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/mutate", json=body, ssl=client_ssl) as response:
            assert response.status == 200
            return await response.json()


async def test_a_pod_gets_a_patch_that_makes_it_the_injected_pod(url: str, client_ssl: ssl.SSLContext,
                                                                 tmp_path: Path) -> None:
    answer = await post_review(url, client_ssl, review(pod()))
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert set(response) == {"uid", "allowed", "patchType", "patch"}
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(pod(), patch)
    assert patched == inject(pod(), OPTIONS).obj
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["resilience-proxy"]
    assert patched["spec"]["containers"][0]["env"] == [
        {"name": "TWILIO_BASE_URL", "value": "http://127.0.0.1:8080/twilio"}]
    assert patched["metadata"]["annotations"] == {"resilience-proxy.io/injected": "0.1.0",
                                                  "resilience-proxy.io/injected-mode": "native"}
    checked = {**patched, "metadata": {**patched["metadata"], "name": "notifier-7d9f8c6b5-abcde"}}
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(checked, sort_keys=False))
    validation = kubernetes_validate(tmp_path / "pod.yaml", "1.29.0")
    assert validation.returncode == 0, validation.stdout + validation.stderr

    again = await post_review(url, client_ssl, review(patched, uid="second"))
    assert again["response"] == {"uid": "second", "allowed": True}


@pytest.mark.parametrize("change", ["disabled", "hostNetwork", "malformed", "not-a-pod", "no-object"])
async def test_what_cannot_be_injected_is_allowed_without_a_patch(url: str, client_ssl: ssl.SSLContext,
                                                                  change: str) -> None:
    obj: Any = pod()
    if change == "disabled":
        obj["metadata"]["annotations"] = {"resilience-proxy.io/inject": "disabled"}
    elif change == "hostNetwork":
        obj["spec"]["hostNetwork"] = True
    elif change == "malformed":
        obj["spec"]["containers"] = {"name": "api"}
    elif change == "not-a-pod":
        obj = ["a", "list"]
    body = review(obj)
    if change == "no-object":
        del body["request"]["object"]
    answer = await post_review(url, client_ssl, body)
    assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}


async def test_a_wrong_content_type_is_415(url: str, client_ssl: ssl.SSLContext) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/mutate", data=yaml.safe_dump(review(pod())),
                                headers={"Content-Type": "application/yaml"}, ssl=client_ssl) as response:
            assert response.status == 415
        async with session.post(f"{url}/mutate", data=b"{not json", headers={"Content-Type": "application/json"},
                                ssl=client_ssl) as response:
            assert response.status == 400
        async with session.get(f"{url}/healthz", ssl=client_ssl) as response:
            assert response.status == 200


async def test_a_client_without_the_test_ca_refuses_the_server(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{url}/healthz", ssl=ssl.create_default_context())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_injector_command_serves_tls_and_stops_on_sigterm(tls_files: tuple[Path, Path],
                                                              client_ssl: ssl.SSLContext) -> None:
    import os
    import urllib.request

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "injector", "--tls-cert", str(tls_files[0]), "--tls-key", str(tls_files[1]),
         "--listen", f"127.0.0.1:{port}"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=client_ssl,
                                            timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "injector did not start"
                time.sleep(0.1)
        request = urllib.request.Request(f"https://127.0.0.1:{port}/mutate", data=json.dumps(review(pod())).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=client_ssl, timeout=5) as response:
            assert json.loads(response.read())["response"]["patchType"] == "JSONPatch"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_a_review_object_is_not_mutated() -> None:
    from proxy.k8s.webhook import review_response

    body = review(pod())
    before = copy.deepcopy(body)
    review_response(body, OPTIONS)
    assert body == before
