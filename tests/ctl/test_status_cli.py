"""``resilience-proxy status`` as users run it: a real subprocess against a real sidecar subprocess."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import free_port
from tests.processes import SidecarProcess
from tests.test_cli import ROOT, run_cli

UPSTREAMS = {"api": {"prefix": "/api", "breaker": {"consecutive_failures": 3, "open_for": "1m", "jitter": 0},
                     "routes": [{"name": "sms", "methods": ["POST"], "path": "/messages"}]}}


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[SidecarProcess]:
    """A sidecar whose upstream refuses connections: three calls open the ``sms`` breaker."""
    upstreams = {name: {**settings, "url": f"http://127.0.0.1:{free_port()}"} for name, settings in UPSTREAMS.items()}
    process = SidecarProcess(tmp_path, upstreams)
    try:
        await process.wait_ready()
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.post(process.url + "/api/messages", data={"To": "+15550001111"}) as response:
                    assert response.status == 502
        yield process
    finally:
        process.stop()


async def test_the_table_shows_each_route_its_breaker_and_its_traffic(sidecar: SidecarProcess) -> None:
    result = await asyncio.to_thread(run_cli, "status", "--admin", sidecar.admin_url)
    assert result.returncode == 0, result.stderr
    header, columns, *rows = result.stdout.splitlines()
    assert header.startswith(f"pid {sidecar.process.pid} · config ")
    assert "state memory · breakers this process (memory backend); traffic this process, last " in header
    assert columns.split() == ["UPSTREAM", "ROUTE", "BREAKER", "RPS", "ERROR%", "P50", "P99", "RETRY/S", "LIMITED/S"]
    sms, default = rows
    assert sms.split()[:4] == ["api", "sms", "open", "(probe"] and "100.0%" in sms
    assert default.split()[:4] == ["api", "default", "closed", "0.00"]
    assert result.stderr == ""


async def test_json_prints_the_status_document(sidecar: SidecarProcess) -> None:
    result = await asyncio.to_thread(run_cli, "status", "--admin", sidecar.admin_url + "/", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [(r["route"], r["breaker"]["state"]) for r in document["routes"]] == [("sms", "open"), ("default", "closed")]


async def test_the_admin_address_comes_from_the_config(sidecar: SidecarProcess) -> None:
    result = await asyncio.to_thread(run_cli, "status", "--config", str(sidecar.config))
    assert result.returncode == 0, result.stderr
    assert "open (probe in" in result.stdout


async def test_watch_redraws_until_ctrl_c(sidecar: SidecarProcess) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "status", "--admin", sidecar.admin_url, "--watch", "0.2",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert watcher.stdout is not None and watcher.stderr is not None
        tables = 0
        async with asyncio.timeout(20):  # three redraws
            while tables < 3:
                tables += (await watcher.stdout.readline()).startswith(b"UPSTREAM")
        watcher.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            err = await watcher.stderr.read()
            assert await watcher.wait() == 0
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()
    assert err == b"", "Ctrl-C ends the watch quietly, without a traceback"


def test_an_unreachable_admin_port_is_one_clear_line_and_exit_1() -> None:
    port = free_port()
    result = run_cli("status", "--admin", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"resilience-proxy status: cannot reach the admin port at http://127.0.0.1:{port}: "
                             "connection refused (is the sidecar running? point --admin at its admin.listen)\n")


def test_bad_arguments_exit_2() -> None:
    bad_admin = run_cli("status", "--admin", "ftp://127.0.0.1:9901")
    assert bad_admin.returncode == 2
    assert "--admin 'ftp://127.0.0.1:9901': write the admin port's URL, e.g. http://127.0.0.1:9901" in bad_admin.stderr
    assert run_cli("status", "--watch", "0").returncode == 2


@pytest.fixture
def refusing_admin() -> Iterator[tuple[str, list[str]]]:
    """Something on the admin address that answers 401 (a proxy in front asking for the token), and the
    Authorization headers it was sent."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"status": 401, "message": "missing or wrong bearer token"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_token_comes_from_the_environment_and_a_refusal_is_told(
    refusing_admin: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = refusing_admin
    monkeypatch.setenv("RESILIENCE_PROXY_ADMIN_TOKEN", "t0ken")
    for name in ("http_proxy", "HTTP_PROXY"):  # a proxy from the environment would see the token: not used
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    result = run_cli("status", "--admin", url)
    assert (result.returncode, seen) == (1, ["Bearer t0ken"])
    assert result.stderr == ("resilience-proxy status: the admin port refused the token (HTTP 401): "
                             "RESILIENCE_PROXY_ADMIN_TOKEN does not hold this sidecar's admin.token\n")
