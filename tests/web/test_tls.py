"""Upstream TLS is always verified; ``ca_bundle`` adds CAs to the system's trust store, never replaces it.

The "system store" here is the machine's own CA file plus one test CA, given to OpenSSL through
``SSL_CERT_FILE`` (which is where ``ssl.create_default_context()`` looks first), so that a server
signed by a CA the system trusts can run on loopback. A second test CA plays the private CA that
users put in ``ca_bundle``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from proxy.config.load import load_config
from proxy.doctor.network import check_upstream
from proxy.doctor.report import FAIL, PASS
from proxy.web.tls import upstream_context
from tests.conftest import write_config
from tests.processes import SidecarProcess


@pytest.fixture(scope="module")
def system_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def private_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def system_store(system_ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The machine's CAs plus ``system_ca``, as the default trust store of this process."""
    machine = Path(ssl.get_default_verify_paths().cafile or "")
    store = tmp_path / "system-ca.pem"
    store.write_bytes((machine.read_bytes() if machine.is_file() else b"") + system_ca.cert_pem.bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(store))
    (tmp_path / "policies").mkdir(exist_ok=True)
    return store


async def tls_server(ca: trustme.CA, aiohttp_server) -> str:  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"tls": True})

    app.router.add_get("/{tail:.*}", hello)
    server = await aiohttp_server(app, ssl=context)
    return f"https://127.0.0.1:{server.port}"


@pytest.fixture
async def servers(system_ca: trustme.CA, private_ca: trustme.CA, aiohttp_server) -> AsyncIterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """A server signed by the system's CA and one signed by the private CA."""
    yield await tls_server(system_ca, aiohttp_server), await tls_server(private_ca, aiohttp_server)


def test_the_context_holds_the_system_cas_and_the_bundles(system_store: Path, private_ca: trustme.CA,
                                                          tmp_path: Path) -> None:
    bundle = tmp_path / "policies" / "ca.pem"
    private_ca.cert_pem.write_to_path(str(bundle))
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    context = upstream_context(str(bundle))
    assert system > 1 and context.cert_store_stats()["x509_ca"] == system + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


async def test_an_upstream_with_a_ca_bundle_trusts_the_bundle_and_the_system_store(
        system_store: Path, servers: tuple[str, str], private_ca: trustme.CA, tmp_path: Path,
        http: aiohttp.ClientSession) -> None:
    """A sidecar process, as the system store is the one of its start (its environment's SSL_CERT_FILE):
    upstreams without a bundle use the context aiohttp loaded the system's CAs into when imported."""
    public, private = servers
    private_ca.cert_pem.write_to_path(str(tmp_path / "policies" / "ca.pem"))
    sidecar = SidecarProcess(tmp_path, {
        "private": {"url": private, "prefix": "/private", "ca_bundle": "ca.pem"},
        "public": {"url": public, "prefix": "/public", "ca_bundle": "ca.pem"},  # e.g. a corporate CA added
        "plain": {"url": public, "prefix": "/plain"},
        "untrusted": {"url": private, "prefix": "/untrusted"},
    }, env={**os.environ, "SSL_CERT_FILE": str(system_store)})
    try:
        await sidecar.wait_ready()
        for prefix in ("/private", "/public", "/plain"):
            async with http.get(sidecar.url + prefix + "/x") as response:
                assert (response.status, await response.json()) == (200, {"tls": True}), prefix
        async with http.get(sidecar.url + "/untrusted/x") as response:
            assert response.status == 502 and (await response.json())["code"] == "tls_certificate_error"
    finally:
        sidecar.stop()


async def test_doctor_verifies_as_the_forwarder_does(system_store: Path, servers: tuple[str, str],
                                                      private_ca: trustme.CA, tmp_path: Path) -> None:
    public, private = servers
    private_ca.cert_pem.write_to_path(str(tmp_path / "policies" / "ca.pem"))
    config = load_config(write_config(tmp_path, {
        "private": {"url": private, "ca_bundle": "ca.pem"}, "public": {"url": public, "ca_bundle": "ca.pem"},
        "untrusted": {"url": private}}))
    results = await asyncio.gather(*(check_upstream(upstream) for upstream in config.upstreams))
    statuses = {result.check: result.status for result in results}
    assert statuses == {"upstream private": PASS, "upstream public": PASS, "upstream untrusted": FAIL}, results
