"""``resilience-proxy breakers`` as an operator runs it: a real CLI subprocess against real sidecar processes.

The sidecars are ``python -m proxy run`` on loopback (tests/processes.py); the upstream is a scripted
aiohttp app in this process. The CLI runs through asyncio's subprocess API so that the upstream keeps
answering while it runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.ctl.admin import TOKEN_ENV
from tests.conftest import ScriptedUpstream, free_port, write_config
from tests.processes import SidecarProcess, start_on_any_ports

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "admin-token-for-tests-0123456789"
STARTUP = 60.0
"""A deadline, not a wait: with other test runs on two cores a sidecar can take 20 s to become ready."""


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def rows(self) -> dict[str, dict[str, str]]:
        """The ``list`` table as {UPSTREAM/ROUTE: {column: cell}}: columns are cut where the header's are."""
        header, *lines = self.stdout.splitlines()
        names = ["NAME", "UPSTREAM/ROUTE", "STATE", "SINCE", "TIME LEFT", "FLEET-WIDE", "REASON"]
        starts = [header.index(name) for name in names]
        assert starts == sorted(starts), header
        rows = {}
        for line in lines:
            cells = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None])]
            rows[cells[1]] = dict(zip(names, cells))
        return rows


async def cli(*args: str, token: str | None = None) -> Result:
    """``python -m proxy ARGS`` from this checkout; ``token`` goes in the environment, as the README says."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if token is not None:
        env[TOKEN_ENV] = token
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", *args, env=env, cwd=ROOT,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert "Traceback" not in stderr.decode(), stderr.decode()
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def upstreams(url: str) -> dict[str, dict[str, Any]]:
    """Two upstreams with a route named ``sms`` each: ``sms`` alone is ambiguous, ``twilio/sms`` is not."""
    breaker = {"consecutive_failures": 2, "open_for": "30s", "jitter": 0}
    return {name: {"url": url, "breaker": breaker, "routes": [{"name": "sms", "methods": ["POST"], "path": "/sms"}]}
            for name in ("twilio", "vonage")}


async def start(directory: Path, url: str, token: str | None = TOKEN, **settings: Any) -> SidecarProcess:
    """A ready sidecar on ports it chose itself (tests/processes.py: none can be taken from under it)."""
    admin: dict[str, str] = {"listen": "127.0.0.1:0", **({"token": token} if token else {})}
    path = write_config(directory, upstreams(url), listen="127.0.0.1:0", admin=admin,
                        log={"level": "info", "access": False}, **settings)
    sidecar, _ = await start_on_any_ports(directory, path, STARTUP)
    return sidecar


@pytest.fixture
async def sidecar(tmp_path: Path, scripted: tuple[ScriptedUpstream, str]) -> AsyncIterator[SidecarProcess]:
    process = await start(tmp_path, scripted[1])
    try:
        yield process
    finally:
        process.stop()


async def send(sidecar: SidecarProcess, upstream: str = "twilio") -> int:
    async with aiohttp.ClientSession() as http, http.post(f"{sidecar.url}/{upstream}/sms", data="x") as response:
        await response.read()
        return response.status


async def breaker(admin: str, key: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(admin + "/admin/breakers") as response:
        return next(b for b in (await response.json())["breakers"] if f"{b['upstream']}/{b['route']}" == key)


async def test_list_shows_a_breaker_that_failures_opened(sidecar: SidecarProcess,
                                                         scripted: tuple[ScriptedUpstream, str]) -> None:
    scripted[0].status = 503
    before = time.monotonic()
    assert [await send(sidecar) for _ in range(3)] == [503, 503, 503]
    assert scripted[0].hits == 2, "open after two failures: the third call failed fast"

    listed = await cli("breakers", "list", "--admin", sidecar.admin_url)
    assert listed.returncode == 0, listed.stderr
    elapsed = time.monotonic() - before + 1  # whole seconds, rounded either way
    rows = listed.rows()
    assert set(rows) == {"twilio/sms", "twilio/default", "vonage/sms", "vonage/default"}
    opened = rows["twilio/sms"]
    assert (opened["NAME"], opened["STATE"], opened["FLEET-WIDE"]) == ("sms", "open", "no (this process)")
    left = re.fullmatch(r"probe in (\d+)s", opened["TIME LEFT"])
    since = re.fullmatch(r"(\d+)s ago", opened["SINCE"])
    assert left and 30 - elapsed <= int(left.group(1)) <= 30, opened  # open_for 30s, jitter 0
    assert since and int(since.group(1)) <= elapsed, opened
    assert "consecutive failures" in opened["REASON"]
    assert (rows["twilio/default"]["NAME"], rows["twilio/default"]["STATE"], rows["twilio/default"]["TIME LEFT"]) == (
        "twilio", "closed", "-")

    as_json = await cli("breakers", "list", "--json", "--admin", sidecar.admin_url)
    elapsed = time.monotonic() - before
    document = json.loads(as_json.stdout)
    assert document["fleet_wide"] is False
    (sms,) = [b for b in document["breakers"] if (b["upstream"], b["route"]) == ("twilio", "sms")]
    assert sms["state"] == "open" and 30 - elapsed <= sms["seconds_left"] <= 30, sms


async def test_force_open_disable_and_reset_act_on_the_sidecar(sidecar: SidecarProcess,
                                                               scripted: tuple[ScriptedUpstream, str]) -> None:
    forced = await cli("breakers", "force-open", "twilio/sms", "--by", "alice", "--admin", sidecar.admin_url,
                       token=TOKEN)
    assert (forced.returncode, forced.stdout) == (0, "twilio/sms: closed -> forced_open (by alice)\n"), forced.stderr
    assert await send(sidecar) == 503 and scripted[0].hits == 0, "forced open: refused without calling the upstream"
    assert await send(sidecar, "vonage") == 200, "the other upstream's sms breaker is another breaker"
    rows = (await cli("breakers", "list", "--admin", sidecar.admin_url)).rows()
    assert (rows["twilio/sms"]["STATE"], rows["twilio/sms"]["TIME LEFT"]) == ("forced_open", "until reset")
    assert "alice" in rows["twilio/sms"]["REASON"]

    disabled = await cli("breakers", "disable", "twilio/sms", "--by", "bob", "--admin", sidecar.admin_url,
                         token=TOKEN)
    assert disabled.stdout == "twilio/sms: forced_open -> disabled (by bob)\n", disabled.stderr
    scripted[0].status = 503
    assert [await send(sidecar) for _ in range(4)] == [503] * 4 and scripted[0].hits == 1 + 4, \
        "disabled: every call reaches the upstream, failures never open it"

    reset = await cli("breakers", "reset", "twilio/sms", "--admin", sidecar.admin_url, token=TOKEN)
    assert reset.stdout.startswith("twilio/sms: disabled -> closed (by "), reset.stdout + reset.stderr
    assert (await breaker(sidecar.admin_url, "twilio/sms"))["state"] == "closed"
    # A default route's breaker goes by its upstream's name; resetting a closed breaker says so.
    again = await cli("breakers", "reset", "twilio", "--by", "carol", "--admin", sidecar.admin_url, token=TOKEN)
    assert again.stdout == "twilio/default: already closed (by carol)\n", again.stderr


async def test_refusals_are_one_clear_line_and_change_nothing(sidecar: SidecarProcess) -> None:
    admin = ("--admin", sidecar.admin_url)
    no_token = await cli("breakers", "force-open", "twilio/sms", *admin)
    assert no_token.returncode == 1
    assert f"set {TOKEN_ENV} in the environment" in no_token.stderr

    wrong = await cli("breakers", "force-open", "twilio/sms", *admin, token="not-the-token")
    assert wrong.returncode == 1
    assert wrong.stderr == ("resilience-proxy breakers: the admin port refused the token (HTTP 401): "
                            f"{TOKEN_ENV} does not hold this sidecar's admin.token\n")

    unknown = await cli("breakers", "disable", "twilio/nope", *admin, token=TOKEN)
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "resilience-proxy breakers: no breaker 'twilio/nope' on this sidecar (known: twilio/default, twilio/sms, "
        "vonage/default, vonage/sms; `resilience-proxy breakers list` shows them)\n")

    ambiguous = await cli("breakers", "reset", "sms", *admin, token=TOKEN)
    assert ambiguous.returncode == 1
    assert ambiguous.stderr == ("resilience-proxy breakers: breaker name 'sms' is ambiguous (twilio/sms, vonage/sms): "
                                "write it as UPSTREAM/ROUTE\n")
    assert (await breaker(sidecar.admin_url, "twilio/sms"))["state"] == "closed"

    port = free_port()
    unreachable = await cli("breakers", "list", "--admin", f"127.0.0.1:{port}")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(
        f"resilience-proxy breakers: cannot reach the admin port at http://127.0.0.1:{port}: "), unreachable.stderr

    data_port = await cli("breakers", "list", "--admin", sidecar.url)
    assert data_port.returncode == 1
    assert "not with the admin API's JSON" in data_port.stderr or "HTTP 404" in data_port.stderr, data_port.stderr


async def test_a_sidecar_without_an_admin_token_refuses_every_action(
    tmp_path: Path, scripted: tuple[ScriptedUpstream, str]
) -> None:
    process = await start(tmp_path, scripted[1], token=None)
    try:
        refused = await cli("breakers", "force-open", "twilio/sms", "--admin", process.admin_url, token=TOKEN)
        assert refused.returncode == 1
        assert refused.stderr == ("resilience-proxy breakers: the admin port refused the action (HTTP 403): "
                                  "admin mutations are disabled: set admin.token in the config\n")
        assert (await breaker(process.admin_url, "twilio/sms"))["state"] == "closed"
    finally:
        process.stop()


async def test_force_open_from_the_cli_is_seen_by_a_second_sidecar(
    tmp_path: Path, scripted: tuple[ScriptedUpstream, str], redis_url: str, redis_server: Any
) -> None:
    state = {"backend": "redis", "redis_url": redis_url}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    started: list[SidecarProcess] = []
    try:
        for name in ("a", "b"):
            started.append(await start(tmp_path / name, scripted[1], state=state))
        first, second = started
        forced = await cli("breakers", "force-open", "twilio/sms", "--by", "alice", "--admin", first.admin_url,
                           token=TOKEN)
        assert forced.returncode == 0, forced.stderr
        with redis_server.client() as redis:
            stored = redis.hgetall("rp:{twilio/sms}:breaker")
        assert (stored["state"], stored["forced_by"]) == ("forced_open", "alice"), stored

        end = time.monotonic() + 15
        while (await breaker(second.admin_url, "twilio/sms"))["state"] != "forced_open":
            assert time.monotonic() < end, "the second sidecar never saw the breaker forced open"
            await asyncio.sleep(0.05)
        assert await send(second) == 503 and scripted[0].hits == 0
        rows = (await cli("breakers", "list", "--admin", second.admin_url)).rows()
        assert (rows["twilio/sms"]["STATE"], rows["twilio/sms"]["FLEET-WIDE"]) == ("forced_open", "yes")

        reset = await cli("breakers", "reset", "twilio/sms", "--admin", second.admin_url, token=TOKEN)
        assert reset.returncode == 0, reset.stderr
        end = time.monotonic() + 15
        while (await breaker(first.admin_url, "twilio/sms"))["state"] != "closed":
            assert time.monotonic() < end, "the first sidecar never saw the reset made through the second"
            await asyncio.sleep(0.05)
        assert await send(first) == 200
    finally:
        for sidecar in started:
            sidecar.stop()


async def test_help_says_where_the_token_comes_from_and_offers_no_token_flag() -> None:
    shown = await cli("breakers", "force-open", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert f"admin.token in the environment variable {TOKEN_ENV} (never a flag" in text
    assert "--token" not in text
