"""Hot reload in one process: the admin endpoints, what survives a reload, what is refused."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from proxy.runtime.sidecar import Sidecar
from tests.conftest import StartSidecar, admin_url, base_url
from tests.metrics_text import sample_value

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rewrite_policies(sidecar: Sidecar, upstreams: dict[str, dict[str, Any]]) -> None:
    """Replace the test policy file (as conftest.write_config lays it out)."""
    path = Path(sidecar.config.policy_files[0])
    path.write_text(yaml.safe_dump({"upstreams": {n: {"retry": False, **u} for n, u in upstreams.items()}}))


async def reload(http: aiohttp.ClientSession, sidecar: Sidecar, headers: dict[str, str] = AUTH
                 ) -> tuple[int, dict[str, Any]]:
    async with http.post(admin_url(sidecar) + "/admin/reload", headers=headers) as response:
        return response.status, await response.json()


async def test_reload_needs_the_admin_token(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    without = await start_sidecar({"api": {"url": url}})
    assert (await reload(http, without, {}))[0] == 403
    with_token = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    assert (await reload(http, with_token, {}))[0] == 401
    assert (await reload(http, with_token, {"Authorization": "Bearer wrong"}))[0] == 401
    status, body = await reload(http, with_token)
    assert status == 200 and body["result"] == "ok"


async def test_a_valid_reload_applies_to_new_requests_and_shows_in_admin_config(  # type: ignore[no-untyped-def]
        start_sidecar: StartSidecar, scripted, http) -> None:
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    async with http.get(admin_url(sidecar) + "/admin/config") as response:
        before = await response.json()
    assert before["last_reload"] is None and before["upstreams"][0]["name"] == "api"
    async with http.get(base_url(sidecar) + "/other/x") as response:
        assert response.status == 404

    rewrite_policies(sidecar, {"api": {"url": url}, "other": {"url": url}})
    status, body = await reload(http, sidecar)
    assert status == 200 and body == {"result": "ok", "version": body["version"], "problems": []}
    async with http.get(base_url(sidecar) + "/other/x") as response:
        assert response.status == 200
    async with http.get(admin_url(sidecar) + "/admin/config") as response:
        after = await response.json()
    assert after["version"] == body["version"] != before["version"]
    assert [u["name"] for u in after["upstreams"]] == ["api", "other"]
    assert after["last_reload"]["result"] == "ok" and after["last_reload"]["trigger"] == "admin"


async def test_an_invalid_config_is_refused_whole_and_reported(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    errors_before = await reload_count(http, sidecar, "error")
    version = sidecar.running.version
    policy = Path(sidecar.config.policy_files[0])
    policy.write_text(f"upstreams:\n  api:\n    url: {url}\n    timeout: 30\n  other:\n    url: {url}\n")

    status, body = await reload(http, sidecar)
    assert status == 422 and body["result"] == "error"
    assert body["problems"] == [f"{sidecar.config.policy_files[0]}:4:5: upstreams.api.timeout: invalid duration "
                                "'30' (write 250ms, 30s, 15m or 1h)"]
    async with http.get(base_url(sidecar) + "/other/x") as response:
        assert response.status == 404  # nothing of the refused config applies
    async with http.get(base_url(sidecar) + "/api/x") as response:
        assert response.status == 200
    async with http.get(admin_url(sidecar) + "/admin/config") as response:
        shown = await response.json()
    assert shown["version"] == version
    assert shown["last_reload"]["result"] == "error" and shown["last_reload"]["problems"] == body["problems"]
    assert await reload_count(http, sidecar, "error") == errors_before + 1


async def test_a_restart_only_setting_refuses_the_reload(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    config = Path(sidecar.config.source)
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "listen": "127.0.0.1:1", "shutdown_grace": "5s"}))
    lines = config.read_text().splitlines()
    at = {key: lines.index(next(line for line in lines if line.startswith(key))) + 1
          for key in ("listen:", "shutdown_grace:")}
    status, body = await reload(http, sidecar)
    assert status == 422
    assert body["problems"] == [
        f"{sidecar.config.source}:{at['listen:']}:1: listen: cannot change while running (127.0.0.1:0 -> 127.0.0.1:1); "
        "restart the sidecar to apply it",
        f"{sidecar.config.source}:{at['shutdown_grace:']}:1: shutdown_grace: cannot change while running (20.0 -> 5.0); "
        "restart the sidecar to apply it"]


async def test_breaker_state_survives_a_reload_of_an_unrelated_change(  # type: ignore[no-untyped-def]
        start_sidecar: StartSidecar, scripted, http) -> None:
    upstream, url = scripted
    upstream.status = 500
    api = {"url": url, "breaker": {"consecutive_failures": 2, "open_for": "60s"}}
    sidecar = await start_sidecar({"api": api}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    for _ in range(2):
        async with http.get(base_url(sidecar) + "/api/x") as response:
            assert response.status == 500
    async with http.get(base_url(sidecar) + "/api/x") as response:
        assert response.status == 503 and "circuit api open" in response.headers["Proxy-Status"]

    rewrite_policies(sidecar, {"api": {**api, "timeout": "5s"}, "other": {"url": url}})
    assert (await reload(http, sidecar))[0] == 200
    hits = upstream.hits
    async with http.get(base_url(sidecar) + "/api/x") as response:
        assert response.status == 503 and "circuit api open" in response.headers["Proxy-Status"]
    assert upstream.hits == hits
    async with http.get(admin_url(sidecar) + "/admin/breakers") as response:
        states = {b["name"]: b["state"] for b in (await response.json())["breakers"]}
    assert states == {"api": "open", "other": "closed"}


async def test_a_request_in_flight_finishes_on_the_old_data_plane(  # type: ignore[no-untyped-def]
        start_sidecar: StartSidecar, scripted, http) -> None:
    upstream, url = scripted
    upstream.delay = 0.8
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    old = sidecar.dataplane
    slow = asyncio.create_task(http.get(base_url(sidecar) + "/api/slow"))
    while old.in_flight == 0:
        await asyncio.sleep(0.01)
    rewrite_policies(sidecar, {"api": {"url": url, "timeout": "5s"}})
    assert (await reload(http, sidecar))[0] == 200
    assert sidecar.dataplane is not old and sidecar.in_flight == 1
    assert not old.clients["api"].session.closed  # its request still uses the pool
    response = await slow
    assert response.status == 200
    for _ in range(100):
        if old.clients["api"].session.closed:
            break
        await asyncio.sleep(0.01)
    assert old.clients["api"].session.closed and sidecar.in_flight == 0


async def test_no_reload_once_the_sidecar_drains(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    plane = sidecar.dataplane
    await sidecar.drain()
    status, body = await reload(http, sidecar)  # the admin port stays up while draining
    assert status == 422 and body["problems"] == [f"{sidecar.config.source}: the sidecar is shutting down"]
    assert sidecar.dataplane is plane


async def test_an_unchanged_upstream_keeps_its_connection_pool(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}, "other": {"url": url}},
                                  admin={"listen": "127.0.0.1:0", "token": TOKEN})
    old = sidecar.dataplane
    rewrite_policies(sidecar, {"api": {"url": url}, "other": {"url": url, "timeout": "3s"}})
    assert (await reload(http, sidecar))[0] == 200
    new = sidecar.dataplane
    assert new.clients["api"] is old.clients["api"] and new.clients["other"] is not old.clients["other"]
    for _ in range(100):
        if old.clients["other"].session.closed:
            break
        await asyncio.sleep(0.01)
    assert old.clients["other"].session.closed and not new.clients["api"].session.closed
    async with http.get(base_url(sidecar) + "/api/x") as response:
        assert response.status == 200


async def test_a_removed_route_leaves_the_breaker_state_gauge(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}, "gone": {"url": url}},
                                  admin={"listen": "127.0.0.1:0", "token": TOKEN})

    async def states() -> set[str]:
        async with http.get(admin_url(sidecar) + "/metrics") as response:
            text = await response.text()
        return {line.split('upstream="')[1].split('"')[0] for line in text.splitlines()
                if line.startswith("resilience_proxy_breaker_state{")}

    assert {"api", "gone"} <= await states()
    rewrite_policies(sidecar, {"api": {"url": url}})
    assert (await reload(http, sidecar))[0] == 200
    shown = await states()
    assert "api" in shown and "gone" not in shown


async def test_unchanged_files_reload_to_nothing(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    plane, oks = sidecar.dataplane, await reload_count(http, sidecar, "ok")
    status, body = await reload(http, sidecar)
    assert status == 200 and body["result"] == "ok" and body["version"] == sidecar.running.version
    assert sidecar.dataplane is plane and await reload_count(http, sidecar, "ok") == oks


async def reload_count(http: aiohttp.ClientSession, sidecar: Sidecar, result: str) -> float:
    async with http.get(admin_url(sidecar) + "/metrics") as response:
        return sample_value(await response.text(), "resilience_proxy_config_reloads_total", result=result)


async def test_a_ca_bundle_without_a_certificate_refuses_the_reload(  # type: ignore[no-untyped-def]
        start_sidecar: StartSidecar, scripted, http) -> None:
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    policy = Path(sidecar.config.policy_files[0])
    (policy.parent / "ca.pem").write_text("not a certificate\n")
    rewrite_policies(sidecar, {"api": {"url": url}, "tls": {"url": "https://127.0.0.1:1", "ca_bundle": "ca.pem"}})
    plane = sidecar.dataplane
    status, body = await reload(http, sidecar)
    assert status == 422 and len(body["problems"]) == 1
    assert re.match(rf"{re.escape(str(policy))}:\d+:\d+: upstreams\.tls\.ca_bundle: cannot load "
                    rf"{re.escape(str(policy.parent / 'ca.pem'))}: ", body["problems"][0]), body["problems"][0]
    assert sidecar.dataplane is plane


async def test_the_access_log_and_headers_follow_a_reload(start_sidecar: StartSidecar, scripted, http) -> None:  # type: ignore[no-untyped-def]
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    assert not sidecar.access_log.enabled
    config = Path(sidecar.config.source)
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "log": {"level": "warning", "access": True},
                                      "org_header": "X-Tenant"}))
    assert (await reload(http, sidecar))[0] == 200
    assert sidecar.access_log.enabled and sidecar.config.org_header == "X-Tenant"
    assert sidecar.dataplane.clients["api"].upstream.strip_headers[0] == "x-tenant"  # never sent upstream
