"""Hot reload under load: the policy file changes (in place, and as a Kubernetes ConfigMap swaps its
``..data`` symlink) while clients keep calling; not one call may fail because of it."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from proxy.config.load import load_config
from proxy.runtime.sidecar import Sidecar
from tests.conftest import admin_url, base_url, free_port
from tests.metrics_text import sample_value
from tests.processes import SidecarProcess

TOKEN = "s3cret-admin-token"


class PlainFiles:
    """Files rewritten in place, as an editor or a config-management tool would."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def publish(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            (self.root / name).write_text(text)


class ConfigMapVolume:
    """Laid out as the kubelet mounts a ConfigMap: ``name -> ..data/name``, ``..data -> ..<timestamp>``;
    an update writes a new timestamped directory and swaps ``..data`` atomically (os.replace)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._generation = itertools.count(1)
        self._files: dict[str, str] = {}

    def publish(self, files: dict[str, str]) -> None:
        """Every key is written again (a ConfigMap update replaces the whole directory)."""
        files = self._files = {**self._files, **files}
        stamp = self.root / f"..2026_12_01_21_00_{next(self._generation):02d}.123456789"
        stamp.mkdir()
        for name, text in files.items():
            (stamp / name).write_text(text)
        data = self.root / "..data"
        previous = os.readlink(data) if data.is_symlink() else None
        os.symlink(stamp.name, self.root / "..data_tmp")
        os.replace(self.root / "..data_tmp", data)
        for name in files:
            if not (self.root / name).is_symlink():
                os.symlink(f"..data/{name}", self.root / name)
        if previous is not None:
            shutil.rmtree(self.root / previous)


def policy(url: str, *, limit: int | None = None, broken: bool = False) -> str:
    api: dict[str, object] = {"url": url, "retry": False}
    if limit is not None:
        api["rate_limits"] = [{"name": "tight", "key": "global", "limit": limit, "per": "1s", "burst": 0}]
    text = yaml.safe_dump({"upstreams": {"api": api}})
    return text + "    timeout: 30\n" if broken else text


def config_text(port: int = 0, admin_port: int = 0) -> str:
    return yaml.safe_dump({"listen": f"127.0.0.1:{port}", "admin": {"listen": f"127.0.0.1:{admin_port}", "token": TOKEN},
                           "policies": ["policy.yaml"], "log": {"level": "warning", "access": False}})


@pytest.fixture
async def slowish_upstream(aiohttp_server) -> str:  # type: ignore[no-untyped-def]
    """Answers after 10 ms, so that requests are in flight whenever a swap happens."""

    async def handle(_: web.Request) -> web.Response:
        await asyncio.sleep(0.01)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


class Load:
    """A few clients calling in a loop, bounded in time and count; every outcome kept with its time."""

    def __init__(self, url: str, clients: int = 3, seconds: float = 8.0, most: int = 4000) -> None:
        self.url, self.clients, self.seconds, self.most = url, clients, seconds, most
        self.outcomes: list[tuple[float, int | str]] = []
        self._stop = asyncio.Event()

    async def _client(self, http: aiohttp.ClientSession) -> None:
        end = time.monotonic() + self.seconds
        while not self._stop.is_set() and time.monotonic() < end and len(self.outcomes) < self.most:
            try:
                async with http.get(self.url) as response:
                    await response.read()
                    self.outcomes.append((time.monotonic(), response.status))
            except Exception as error:  # every failure is kept, to be reported
                self.outcomes.append((time.monotonic(), f"{type(error).__name__}: {error}"))
            await asyncio.sleep(0.005)

    async def run(self) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            clients = [asyncio.create_task(self._client(http)) for _ in range(self.clients)]
            try:
                yield
            finally:
                self._stop.set()
                await asyncio.gather(*clients)

    def since(self, moment: float) -> list[int | str]:
        return [outcome for at, outcome in self.outcomes if at >= moment]


async def until(probe, deadline: float = 2.0) -> float:  # type: ignore[no-untyped-def]
    """Poll ``probe()`` until true; the seconds it took (failing past ``deadline``)."""
    started = time.monotonic()
    while not await probe():
        assert time.monotonic() - started < deadline, f"not true within {deadline}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("layout", [PlainFiles, ConfigMapVolume], ids=["in-place", "configmap-symlink-swap"])
async def test_policy_changes_under_load_apply_without_a_failed_request(  # type: ignore[no-untyped-def]
        tmp_path: Path, slowish_upstream: str, layout) -> None:
    files = layout(tmp_path)
    files.publish({"config.yaml": config_text(), "policy.yaml": policy(slowish_upstream)})
    sidecar = Sidecar(load_config(tmp_path / "config.yaml"))
    await sidecar.start()
    try:
        await change_policies_under_load(files, slowish_upstream, base_url(sidecar), admin_url(sidecar))
    finally:
        await sidecar.close()


async def test_a_configmap_update_under_load_on_a_real_process(tmp_path: Path, slowish_upstream: str) -> None:
    """The same with the sidecar in its own process (uvloop, real signals and sockets)."""
    files = ConfigMapVolume(tmp_path)
    port, admin_port = free_port(), free_port()
    files.publish({"config.yaml": config_text(port, admin_port), "policy.yaml": policy(slowish_upstream)})
    sidecar = SidecarProcess(tmp_path, {}, config=(tmp_path / "config.yaml", port, admin_port))
    try:
        await sidecar.wait_ready()
        await change_policies_under_load(files, slowish_upstream, sidecar.url, sidecar.admin_url)
        sidecar.signal(signal.SIGTERM)
        assert await sidecar.wait_exit() == 0
    finally:
        sidecar.stop()


async def change_policies_under_load(files: PlainFiles | ConfigMapVolume, upstream: str, data_root: str,
                                     admin_root: str) -> None:
    """Valid (a new limit), invalid, valid again (no limit), while three clients call."""
    load = Load(data_root + "/api/call")
    async with aiohttp.ClientSession() as admin:

        async def shown() -> dict:  # type: ignore[type-arg]
            async with admin.get(admin_root + "/admin/config") as response:
                return await response.json()

        async def reloads(result: str) -> float:
            async with admin.get(admin_root + "/metrics") as response:
                return sample_value(await response.text(), "resilience_proxy_config_reloads_total", result=result)

        ok_before, errors_before = await reloads("ok"), await reloads("error")
        policy_file = (await shown())["policy_files"][0]
        async for _ in load.run():
            await asyncio.sleep(0.5)
            assert set(load.since(0)) == {200}

            # 1. A valid change: a limit that rejects most of this load takes effect within 2 s.
            published = time.monotonic()
            files.publish({"policy.yaml": policy(upstream, limit=5)})
            took = await until(lambda: asyncio.sleep(0, 429 in load.since(published)))
            assert took < 2.0
            limited = (await shown())["version"]

            # 2. An invalid change: refused whole, the limit still enforced, the error shown with file:line.
            broken = policy(upstream, limit=5, broken=True)
            files.publish({"policy.yaml": broken})
            await until(lambda: _last_result(shown, "error"))
            refused_at = time.monotonic()
            config = await shown()
            assert config["version"] == limited
            assert config["last_reload"]["problems"] == [
                f"{policy_file}:{broken.count(chr(10))}:5: upstreams.api.timeout: invalid duration '30' "
                "(write 250ms, 30s, 15m or 1h)"]
            await asyncio.sleep(0.5)
            assert 429 in load.since(refused_at)

            # 3. Valid again, without the limit: every call passes once it is applied.
            files.publish({"policy.yaml": policy(upstream)})
            await until(lambda: _last_result(shown, "ok"))
            applied_at = time.monotonic()
            await asyncio.sleep(0.5)
            assert set(load.since(applied_at + 0.05)) == {200}

        assert await reloads("ok") - ok_before == 2
        assert await reloads("error") - errors_before == 1
    outcomes = [outcome for _, outcome in load.outcomes]
    failures = [o for o in outcomes if o not in (200, 429)]
    assert failures == [], f"{len(failures)} failed of {len(outcomes)}: {failures[:5]}"
    print(f"{len(outcomes)} calls: {outcomes.count(200)} x 200, {outcomes.count(429)} x 429 (the new limit)")
    assert outcomes.count(200) > 100 and outcomes.count(429) > 20


async def _last_result(shown, result: str) -> bool:  # type: ignore[no-untyped-def]
    last = (await shown())["last_reload"]
    return last is not None and last["result"] == result
