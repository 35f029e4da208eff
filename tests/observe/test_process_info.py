"""What an operator checks first: the version (``--version``, ``build_info``) and whether the last reload was taken."""

from __future__ import annotations

import asyncio
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import yaml

from proxy import __version__
from tests.conftest import StartSidecar, admin_url
from tests.metrics_text import samples
from tests.processes import SidecarProcess
from tests.web.test_reload import TOKEN, reload, rewrite_policies

OK = "resilience_proxy_config_last_reload_successful"
AT = "resilience_proxy_config_last_reload_success_timestamp_seconds"


def test_version_prints_the_version() -> None:
    result = subprocess.run([sys.executable, "-m", "proxy", "--version"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert (result.returncode, result.stdout) == (0, f"resilience-proxy {__version__}\n")


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/metrics") as response:
        return await response.text()


def one(text: str, name: str) -> float:
    [(_, value)] = samples(text, name)
    return value


async def test_build_info_names_the_version_and_python(  # type: ignore[no-untyped-def]
        start_sidecar: StartSidecar, scripted, http) -> None:
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}})
    assert samples(await scrape(http, admin_url(sidecar)), "resilience_proxy_build_info") == [
        ({"version": __version__, "python_version": platform.python_version()}, 1.0)]


async def test_a_refused_reload_shows_0_until_a_config_is_taken_again(  # type: ignore[no-untyped-def]
        start_sidecar: StartSidecar, scripted, http) -> None:
    _, url = scripted
    sidecar = await start_sidecar({"api": {"url": url}}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    text = await scrape(http, admin_url(sidecar))
    assert one(text, OK) == 1 and one(text, AT) == sidecar.running.loaded_at, "the start counts as a load"

    policy = Path(sidecar.config.policy_files[0])
    good = policy.read_text()
    policy.write_text("upstreams: {api: {url: 12}}\n")
    assert (await reload(http, sidecar))[0] == 422
    text = await scrape(http, admin_url(sidecar))
    assert one(text, OK) == 0 and one(text, AT) == sidecar.running.loaded_at

    policy.write_text(good)  # back to what runs: nothing to apply, and no longer refused
    before = time.time()
    assert (await reload(http, sidecar))[0] == 200
    text = await scrape(http, admin_url(sidecar))
    assert one(text, OK) == 1 and before <= one(text, AT) <= time.time()

    rewrite_policies(sidecar, {"api": {"url": url}, "other": {"url": url}})
    before = time.time()
    assert (await reload(http, sidecar))[0] == 200
    text = await scrape(http, admin_url(sidecar))
    assert one(text, OK) == 1 and before <= one(text, AT) <= time.time()


async def test_with_workers_each_gauge_is_one_series_for_the_whole_group(  # type: ignore[no-untyped-def]
        tmp_path: Path, scripted) -> None:
    _, url = scripted
    sidecar = SidecarProcess(tmp_path, {"api": {"url": url, "prefix": "/api"}}, "--workers", "2",
                             "--watch-interval", "0", log={"level": "info", "access": False})
    try:
        await sidecar.wait_ready()
        async with aiohttp.ClientSession() as http:
            await _until(lambda: len(_serving(sidecar)) == 2)  # both workers wrote their gauges
            text = await scrape(http, sidecar.admin_url)
            assert [value for _, value in samples(text, "resilience_proxy_build_info")] == [1.0]
            assert one(text, OK) == 1
            started = one(text, AT)

            policy = sidecar.config.parent / "policies" / "test.yaml"
            policy.write_text(yaml.safe_dump({"upstreams": {"api": {"url": 12}}}))
            sidecar.signal(signal.SIGHUP)
            await _until(lambda: sidecar.log.count("config reload refused (") == 2)
            for _ in range(4):  # a new connection each time: whichever worker answers says the same
                async with aiohttp.ClientSession() as fresh:
                    text = await scrape(fresh, sidecar.admin_url)
                assert (one(text, OK), one(text, AT)) == (0, started)
        sidecar.signal(signal.SIGTERM)
        assert await sidecar.wait_exit() == 0
    finally:
        sidecar.stop()


def _serving(sidecar: SidecarProcess) -> list[str]:
    return [line for line in sidecar.log.splitlines() if '"msg":"serving"' in line]


async def _until(condition, deadline: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.05)
