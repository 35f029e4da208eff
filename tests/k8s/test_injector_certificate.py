"""The injector's serving certificate: rotated in place (as the kubelet projects a renewed cert-manager
Secret) under a running injector, it is served without a restart; its expiry is a metric."""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from proxy.k8s.certs import not_after
from tests.k8s.helpers import ROOT
from tests.metrics_text import sample_value

UTC = datetime.UTC


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProjectedSecret:
    """A Secret volume laid out as the kubelet writes it: ``tls.crt -> ..data/tls.crt``, ``..data`` a symlink
    to a timestamped directory, swapped atomically on an update."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.versions = 0
        for name in ("tls.crt", "tls.key"):
            (directory / name).symlink_to(f"..data/{name}")

    def write(self, cert: bytes, key: bytes) -> None:
        self.versions += 1
        version = self.directory / f"..2026_12_07_{self.versions}"
        version.mkdir()
        (version / "tls.crt").write_bytes(cert)
        (version / "tls.key").write_bytes(key)
        link = self.directory / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.directory / "..data")


def pems(cert: trustme.LeafCert) -> tuple[bytes, bytes]:
    return b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes()


def issue(ca: trustme.CA, days: int) -> trustme.LeafCert:
    expiry = datetime.datetime.now(UTC).replace(microsecond=0) + datetime.timedelta(days=days)
    return ca.issue_cert("127.0.0.1", not_after=expiry)


def served_certificate(port: int, client: ssl.SSLContext) -> bytes:
    """The DER of the certificate a new TLS handshake with the injector gets (verified against the CA)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return der


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def until(check, what: str, process: subprocess.Popen[str], deadline: float = 15.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        assert process.poll() is None, f"injector exited: {process.returncode}"
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def injector(ca: trustme.CA, tmp_path: Path) -> Iterator[tuple[ProjectedSecret, int, int, subprocess.Popen[str]]]:
    secret = ProjectedSecret(tmp_path)
    secret.write(*pems(issue(ca, 90)))
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(tmp_path / "injector.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "injector", "--tls-cert", str(tmp_path / "tls.crt"),
             "--tls-key", str(tmp_path / "tls.key"), "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}", "--reload-interval", "0.1"],
            cwd=ROOT, env=env, stderr=log, text=True)
        try:
            yield secret, port, metrics_port, process
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0
    lines = (tmp_path / "injector.log").read_text().splitlines()
    assert lines and all(json.loads(line)["msg"] for line in lines), "JSON log lines, as the sidecar's"


def test_a_rotated_certificate_is_served_without_a_restart(ca: trustme.CA, injector, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secret, port, metrics_port, process = injector
    client = ssl.create_default_context()
    ca.configure_trust(client)
    served = until(lambda: served_certificate(port, client), "the injector", process)
    expiry = sample_value(metrics(metrics_port), "resilience_proxy_injector_certificate_expiry_timestamp_seconds")
    assert expiry == not_after((tmp_path / "tls.crt").read_bytes()) > time.time() + 89 * 86400

    renewed = issue(ca, 30)
    secret.write(*pems(renewed))
    until(lambda: served_certificate(port, client) == der(renewed), "the renewed certificate", process)
    text = metrics(metrics_port)
    assert sample_value(text, "resilience_proxy_injector_certificate_expiry_timestamp_seconds") == pytest.approx(
        renewed_expiry := not_after(pems(renewed)[0]))
    assert time.time() + 29 * 86400 < renewed_expiry < time.time() + 31 * 86400
    assert sample_value(text, "resilience_proxy_injector_certificate_reloads_total", outcome="success") == 1
    assert served != der(renewed)

    # A key that does not match its certificate is refused: the renewed pair keeps serving.
    other = issue(ca, 60)
    secret.write(pems(other)[0], pems(renewed)[1])
    until(lambda: sample_value(metrics(metrics_port), "resilience_proxy_injector_certificate_reloads_total",
                               outcome="failure") == 1, "the refused reload", process)
    assert served_certificate(port, client) == der(renewed)
    secret.write(*pems(other))
    until(lambda: served_certificate(port, client) == der(other), "the next good pair", process)


def test_not_after_reads_utc_and_generalized_times(ca: trustme.CA) -> None:
    for expiry in (datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC),  # UTCTime (before 2050)
                   datetime.datetime(2061, 1, 2, 3, 4, 5, tzinfo=UTC)):  # GeneralizedTime
        cert = ca.issue_cert("127.0.0.1", not_after=expiry)
        assert not_after(cert.cert_chain_pems[0].bytes()) == expiry.timestamp()
    with pytest.raises(ValueError):
        not_after(b"not a certificate")
