"""``resilience-proxy doctor`` as users run it (a subprocess), against loopback stand-ins for the world:
a real redis-server, the fake Slack, a Sentry endpoint, an upstream with a trustme TLS certificate."""

from __future__ import annotations

import asyncio
import dataclasses
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

from proxy.config.load import load_config
from proxy.config.model import Address
from proxy.config.webhooks import Webhook
from proxy.doctor.local import check_listen, check_state_backend
from proxy.doctor.report import FAIL, PASS, SKIP, WARN, Result, exit_status, render
from tests.conftest import free_port
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
    for line in text.splitlines()[1:]:
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


async def test_a_healthy_setup_passes_every_check(tmp_path: Path, world: World, redis_url: str) -> None:
    write(tmp_path, world, redis_url)
    status, rows, output = await doctor(tmp_path)
    assert status == 0, output
    assert list(rows) == ["config", "redis", "lua scripts", "slack token", "slack channel", "sentry dsn",
                          "sentry host", "upstream api", "admin token", "listen addresses"]
    assert {check: result[0] for check, result in rows.items() if result[0] != "PASS"} == {}, output
    assert rows["lua scripts"][1] == "5 loaded: admit, force, ratelimit, ratelimit_hold, record"
    assert rows["slack channel"][1] == "C123 (#alerts)"
    assert "TLSv1.3 verified" in rows["upstream api"][1]
    assert [call.method for call in world.slack.calls] == ["auth.test", "conversations.info"]
    assert world.envelopes == []


async def test_send_test_alert_posts_to_slack_and_sentry(tmp_path: Path, world: World, redis_url: str) -> None:
    write(tmp_path, world, redis_url)
    status, rows, output = await doctor(tmp_path, "--send-test-alert")
    assert status == 0, output
    assert rows["test slack message"][0] == "PASS" and rows["test sentry event"][0] == "PASS"
    assert world.slack.texts() == ["resilience-proxy doctor: test alert (nothing is wrong)"]
    assert len(world.envelopes) == 1


async def test_redis_down_fails(tmp_path: Path, world: World) -> None:
    port = free_port()
    write(tmp_path, world, f"redis://127.0.0.1:{port}/0")
    status, rows, output = await doctor(tmp_path)
    assert status == 1
    assert rows["redis"][0] == "FAIL", output
    assert rows["redis"][1].startswith(f"redis://127.0.0.1:{port}/0: Error 111 connecting to 127.0.0.1:{port}.")
    assert rows["lua scripts"] == ("SKIP", "Redis unreachable")


async def test_a_refused_slack_token_fails(tmp_path: Path, world: World, redis_url: str) -> None:
    world.slack.token = "xoxb-other"
    write(tmp_path, world, redis_url)
    status, rows, _ = await doctor(tmp_path)
    assert status == 1
    assert rows["slack token"] == ("FAIL", "Slack answered invalid_auth")
    assert rows["slack channel"] == ("SKIP", "token not valid")


async def test_an_unknown_slack_channel_fails(tmp_path: Path, world: World, redis_url: str) -> None:
    world.slack.channels = {}
    write(tmp_path, world, redis_url)
    status, rows, _ = await doctor(tmp_path)
    assert status == 1
    assert rows["slack channel"] == ("FAIL", "Slack answered channel_not_found")


async def test_a_token_without_the_scope_to_read_channels_warns(tmp_path: Path, world: World,
                                                                redis_url: str) -> None:
    world.slack.conversations_error = "missing_scope"
    write(tmp_path, world, redis_url)
    status, rows, _ = await doctor(tmp_path)
    assert status == 0
    assert rows["slack channel"] == ("WARN", "not checked: the token lacks the scope channels:read")


async def test_an_unreachable_upstream_fails(tmp_path: Path, world: World, redis_url: str) -> None:
    port = free_port()
    write(tmp_path, world, redis_url, upstream_url=f"https://127.0.0.1:{port}")
    status, rows, _ = await doctor(tmp_path)
    assert status == 1
    assert rows["upstream api"][0] == "FAIL"
    assert rows["upstream api"][1].startswith(f"127.0.0.1:{port}: connect: ")


async def test_an_untrusted_certificate_fails(tmp_path: Path, world: World, redis_url: str) -> None:
    write(tmp_path, world, redis_url)
    (tmp_path / "policies" / "ca.pem").write_bytes(trustme.CA().cert_pem.bytes())
    status, rows, _ = await doctor(tmp_path)
    assert status == 1
    assert rows["upstream api"][0] == "FAIL" and ": TLS: " in rows["upstream api"][1]


async def test_skip_network_skips_what_leaves_the_machine(tmp_path: Path, world: World) -> None:
    write(tmp_path, world, f"redis://127.0.0.1:{free_port()}/0", upstream_url="https://127.0.0.1:1",
          listen="0.0.0.0:8080", admin={"listen": "127.0.0.1:9901"})
    status, rows, output = await doctor(tmp_path, "--skip-network")
    assert status == 0, output
    assert {check: result[0] for check, result in rows.items()} == {
        "config": "PASS", "redis": "SKIP", "lua scripts": "SKIP", "slack": "SKIP", "sentry dsn": "PASS",
        "sentry host": "SKIP", "upstream api": "SKIP", "admin token": "WARN", "listen addresses": "WARN"}
    assert rows["listen addresses"][1] == "not loopback: listen 0.0.0.0:8080"
    assert world.slack.calls == []
    strict, _, _ = await doctor(tmp_path, "--skip-network", "--strict")
    assert strict == 2


async def test_a_broken_config_fails_and_lists_its_problems(tmp_path: Path, world: World) -> None:
    write(tmp_path, world, "redis://127.0.0.1:1/0", shutdown_grace=20)
    status, rows, output = await doctor(tmp_path)
    assert status == 1
    assert rows == {"config": ("FAIL", "1 error (see below)")}
    assert "config.yaml:" in output and "shutdown_grace: invalid duration '20'" in output


async def test_lint_warnings_warn_and_are_listed(tmp_path: Path, world: World) -> None:
    write(tmp_path, world, "redis://127.0.0.1:1/0")
    (tmp_path / "policies" / "api.yaml").write_text(
        f"upstreams:\n  api:\n    url: {world.upstream_url}\n    retry: {{deadline: 1s}}\n")
    status, rows, output = await doctor(tmp_path, "--skip-network")
    assert status == 0
    assert rows["config"] == ("WARN", "1 upstream from 1 policy file; 1 warning (see below)")
    assert output.splitlines()[-1] == (
        "policies/api.yaml:4:13: warning: upstreams.api.retry.deadline: deadline 1s is shorter than one attempt "
        "(the upstream's timeout 10s): a first attempt that times out leaves no time to retry")


def test_local_checks_and_exit_status() -> None:
    config = load_config(ROOT / "config.example.yaml", {})
    assert check_state_backend(config) == Result(
        "state backend", WARN, "memory: breakers and rate limits are per process, not per fleet")
    with_webhooks = dataclasses.replace(config, webhooks=(Webhook("w", "/hooks/w", "http://127.0.0.1:3000/w", "none"),))
    assert check_state_backend(with_webhooks) == Result(
        "state backend", WARN, "memory: breakers and rate limits are per process, not per fleet; "
                               "webhook events not yet delivered are lost on restart")
    assert check_listen(config).status == PASS
    exposed = dataclasses.replace(config, admin=dataclasses.replace(config.admin, listen=Address("::", 9901)))
    assert check_listen(exposed) == Result("listen addresses", WARN, "not loopback: admin.listen [::]:9901")
    assert exit_status([Result("a", PASS, ""), Result("b", WARN, "")], strict=False) == 0
    assert exit_status([Result("a", PASS, ""), Result("b", WARN, "")], strict=True) == 2
    assert exit_status([Result("a", FAIL, ""), Result("b", WARN, "")], strict=True) == 1
    assert render([Result("config", PASS, "ok"), Result("upstream twilio", SKIP, "--skip-network")]) == (
        "CHECK            STATUS  DETAIL\n"
        "config           PASS    ok\n"
        "upstream twilio  SKIP    --skip-network\n")
