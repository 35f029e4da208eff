"""``resilience-proxy doctor`` as users run it (a subprocess), against loopback stand-ins for the world:
a real redis-server, the fake Slack, a Sentry endpoint, an upstream with a trustme TLS certificate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path

import trustme
import yaml

from proxy.config.load import load_config
from proxy.config.model import Address
from proxy.config.webhooks import Webhook
from proxy.doctor.local import check_listen, check_state_backend
from proxy.doctor.report import FAIL, PASS, SKIP, WARN, Result, exit_status, render
from tests.conftest import free_port
from tests.doctor.conftest import World, doctor, write
from tests.test_cli import ROOT


async def test_a_healthy_setup_passes_every_check(tmp_path: Path, world: World, redis_url: str) -> None:
    write(tmp_path, world, redis_url)
    status, rows, output = await doctor(tmp_path)
    assert status == 0, output
    assert list(rows) == ["config", "redis", "lua scripts", "slack token", "slack channel", "sentry dsn",
                          "sentry host", "upstream api", "admin token", "listen addresses"]
    assert {check: result[0] for check, result in rows.items() if result[0] != "PASS"} == {}, output
    assert rows["lua scripts"][1] == "6 loaded: admit, force, ratelimit, ratelimit_hold, ratelimit_refund, record"
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


async def test_network_checks_run_at_once_and_each_row_prints_as_soon_as_it_and_those_above_are_known(
    tmp_path: Path
) -> None:
    async def never_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # a TLS client waits for a ServerHello that never comes

    silent = await asyncio.start_server(never_handshake, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        (tmp_path / "policies").mkdir()
        upstreams = {name: {"url": f"https://127.0.0.1:{port}", "connect_timeout": "2s"} for name in "abc"}
        (tmp_path / "policies" / "api.yaml").write_text(yaml.safe_dump({"upstreams": upstreams}))
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({"listen": "127.0.0.1:8080"}))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "doctor", "--config", "config.yaml", cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE)
        assert process.stdout is not None
        lines: list[tuple[float, str]] = []
        async with asyncio.timeout(60):
            while line := await process.stdout.readline():
                lines.append((time.monotonic(), line.decode().rstrip("\n")))
            assert await process.wait() == 1
    finally:
        silent.close()
        await silent.wait_closed()
    names = [re.split(r"\s{2,}", text)[0] for _, text in lines]
    assert names == ["CHECK", "config", "state backend", "slack", "sentry dsn", "upstream a", "upstream b",
                     "upstream c", "admin token", "listen addresses"]
    arrived = {name: at for name, (at, _) in zip(names, lines)}
    assert arrived["upstream a"] - arrived["sentry dsn"] > 1.5, "the local rows came before the 2 s handshakes"
    took = arrived["listen addresses"] - arrived["sentry dsn"]
    assert took < 2 * 2.0, f"three 2 s checks took {took:.1f}s: they ran one after the other"
    assert all(": TLS: " in text or "connect" in text for _, text in lines[5:8] if "FAIL" in text), lines


async def test_json_output_is_one_document_with_the_checks_the_problems_and_the_exit_status(
    tmp_path: Path, world: World
) -> None:
    write(tmp_path, world, f"redis://127.0.0.1:{free_port()}/0", admin={"listen": "127.0.0.1:9901"})
    status, _, output = await doctor(tmp_path, "--skip-network", "--strict", "-o", "json")
    document = json.loads(output)  # stdout, then stderr: which is empty
    assert status == document["exit_status"] == 2
    assert [(c["name"], c["status"]) for c in document["checks"]] == [
        ("config", "PASS"), ("redis", "SKIP"), ("lua scripts", "SKIP"), ("slack", "SKIP"), ("sentry dsn", "PASS"),
        ("sentry host", "SKIP"), ("upstream api", "SKIP"), ("admin token", "WARN"), ("listen addresses", "PASS")]
    assert document["checks"][7]["detail"].startswith("not set: ")
    assert document["problems"] == []

    write(tmp_path, world, "redis://127.0.0.1:1/0", shutdown_grace=20)
    status, _, output = await doctor(tmp_path, "-o", "json")
    document = json.loads(output)
    assert status == document["exit_status"] == 1
    assert document["checks"] == [{"name": "config", "status": "FAIL", "detail": "1 error (see below)"}]
    [problem] = document["problems"]
    assert {k: problem[k] for k in ("key", "message", "severity")} == {
        "key": "shutdown_grace", "message": "invalid duration '20' (write 250ms, 30s, 15m or 1h)", "severity": "error"}
    assert problem["file"].endswith("config.yaml") and problem["line"] > 0 and problem["column"] > 0
