"""Malformed requests carrying secrets, sent byte by byte to a real sidecar: each is answered 400, and
what aiohttp logs about it (stderr JSON, Sentry breadcrumbs) says what happened, never what was sent."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import StartSidecar, base_url, free_port
from tests.observe.fake_sentry import FakeSentry
from tests.observe.sentry_fixtures import fake_sentry_fixture, flush, no_sentry_leak_fixture  # noqa: F401
from tests.processes import SidecarProcess
from tests.rawhttp import send_raw

SECRETS = ["SECRETCOOKIE", "SECRETTOKEN", "SECRETKEY", "SECRETQUERY", "SECRETBODY", "SECRETHEADER"]
MALFORMED = [
    b"GET /api/x HTTP/1.1\r\nHost: a\r\nCookie: s=SECRETCOOKIE\x01x\r\n\r\n",
    b"GET /api/x?access_token=SECRETTOKEN&key=SECRETKEY&q=SECRETQUERY\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzzSECRETBODY\r\n0\r\n\r\n",
    b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Note SECRETHEADER\r\n\r\n",
]


def assert_nothing_sent_is_logged(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{leaked} reached the log:\n{text}"


async def wait_for_lines(process: SidecarProcess, count: int, deadline: float = 10.0) -> list[dict[str, Any]]:
    """The sidecar's aiohttp.server lines, once ``count`` of them are written."""
    end = time.monotonic() + deadline
    while True:
        lines = [json.loads(line) for line in process.log.splitlines() if line.startswith("{")]
        server = [line for line in lines if line["logger"] == "aiohttp.server"]
        if len(server) >= count or time.monotonic() > end:
            return server
        await asyncio.sleep(0.05)


async def test_malformed_requests_to_the_data_and_admin_ports_log_no_byte_of_them(tmp_path: Path) -> None:
    process = SidecarProcess(tmp_path, {"api": {"url": f"http://127.0.0.1:{free_port()}", "prefix": "/api"}})
    try:
        await process.wait_ready()
        for port in (process.port, process.admin_port):
            for request in MALFORMED:
                assert (await send_raw(port, request)).status == 400
        lines = await wait_for_lines(process, 2 * len(MALFORMED))
    finally:
        process.stop()
    assert_nothing_sent_is_logged(process.log)
    assert len(lines) == 2 * len(MALFORMED), process.log  # the path under test was taken, once per request
    assert {line["level"] for line in lines} == {"warning"}  # the client's mistake, not the sidecar's error
    assert all(line["msg"].startswith("Error handling request from 127.0.0.1 (") for line in lines)
    assert "aiohttp.http_exceptions.BadHttpMessage (400)" in lines[0]["exc"]


async def test_any_aiohttp_server_in_the_process_is_covered(caplog: pytest.LogCaptureFixture) -> None:
    """Protection is per process, not per server: a listener added later (webhooks) needs nothing of its own."""
    from proxy.observe.library_logs import protect_library_logs

    protect_library_logs()
    runner = web.AppRunner(web.Application())  # aiohttp's defaults, its access log included
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with caplog.at_level(logging.DEBUG, logger="aiohttp"):
            for request in MALFORMED:
                assert (await send_raw(port, request)).status == 400
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/?key=SECRETKEY",
                                headers={"Referer": "SECRETHEADER"}) as response:
                assert response.status == 404
    finally:
        await runner.cleanup()
    records = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert [r.name for r in records] == ["aiohttp.server"] * len(MALFORMED)  # the access line is not written
    assert_nothing_sent_is_logged("\n".join(f"{r.getMessage()} {r.exc_text} {r.exc_info}" for r in records))


async def test_sentry_sees_no_byte_of_a_malformed_request(
        start_sidecar: StartSidecar, fake_sentry: FakeSentry, http: aiohttp.ClientSession) -> None:
    sidecar = await start_sidecar({"api": {"url": f"http://127.0.0.1:{free_port()}", "prefix": "/api"}},
                                  errors={"sentry": {"dsn": fake_sentry.dsn, "environment": "test"}})
    port = int(base_url(sidecar).rsplit(":", 1)[1])
    for request in MALFORMED:
        assert (await send_raw(port, request)).status == 400
    async with http.get(base_url(sidecar) + "/api/x") as response:  # one event, carrying the breadcrumbs
        assert response.status == 502
    await flush()
    [event] = fake_sentry.events
    crumbs = [crumb for crumb in event["breadcrumbs"]["values"] if crumb.get("category") == "aiohttp.server"]
    assert len(crumbs) == len(MALFORMED) and crumbs[0]["level"] == "warning"
    assert_nothing_sent_is_logged(fake_sentry.raw.decode("utf-8", "replace"))
