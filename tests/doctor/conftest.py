"""What every doctor test needs: the world the doctor checks (Slack, Sentry, a TLS upstream on loopback),
a config pointing at it, and ``resilience-proxy doctor`` run as users run it (a subprocess)."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from aiohttp import web

from tests.fake_slack import FakeSlack
from tests.test_cli import ROOT


@dataclass
class World:
    slack: FakeSlack
    sentry_url: str
    upstream_url: str
    ca_pem: bytes
    envelopes: list[bytes] = field(default_factory=list)


async def doctor(tmp_path: Path, *args: str) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit status, {check: (status, detail)} and the whole output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "doctor", "--config", "config.yaml", *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    text = out.decode()
    rows = {}
    for line in [] if text.startswith("{") else text.splitlines()[1:]:  # -o json: the caller parses it
        if not line.strip():
            break
        check, status, detail = re.split(r"\s{2,}", line, maxsplit=2)
        rows[check] = (status, detail)
    return process.returncode, rows, text + err.decode()


@pytest.fixture
async def world(aiohttp_server) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    slack = FakeSlack()
    slack_server = await aiohttp_server(slack.app())
    slack.base_url = f"http://127.0.0.1:{slack_server.port}/api/"

    envelopes: list[bytes] = []

    async def envelope(request: web.Request) -> web.Response:
        envelopes.append(await request.read())
        return web.json_response({})

    sentry = web.Application()
    sentry.router.add_post("/api/1/envelope/", envelope)
    sentry_server = await aiohttp_server(sentry)

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handshake_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    tls = await asyncio.start_server(handshake_only, "127.0.0.1", 0, ssl=server_context)
    port = tls.sockets[0].getsockname()[1]
    yield World(slack, f"http://key@127.0.0.1:{sentry_server.port}/1", f"https://127.0.0.1:{port}",
                ca.cert_pem.bytes(), envelopes)
    tls.close()
    await tls.wait_closed()


def write(tmp_path: Path, world: World, redis_url: str, **changes: Any) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "ca.pem").write_bytes(world.ca_pem)
    upstream = {"url": changes.pop("upstream_url", world.upstream_url), "ca_bundle": "ca.pem"}
    (tmp_path / "policies" / "api.yaml").write_text(yaml.safe_dump({"upstreams": {"api": upstream}}))
    config: dict[str, Any] = {
        "listen": "127.0.0.1:8080", "admin": {"listen": "127.0.0.1:9901", "token": "secret"},
        "state": {"backend": "redis", "redis_url": redis_url},
        "alerts": {"slack": {"token": "xoxb-test", "channel": "C123", "base_url": world.slack.base_url}},
        "errors": {"sentry": {"dsn": world.sentry_url}},
    }
    config.update(changes)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
