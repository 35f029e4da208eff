"""Inbound webhooks through a real sidecar process (``python -m proxy run``) on a real redis-server.

The webhooks listener is its own port: it takes verified provider requests and serves nothing else;
the data port does not serve webhook paths. The sidecar's delivery workers bring events to a real
app; the delivery log is read back from Redis with the store itself.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

from proxy.state.redis.webhooks import RedisWebhookStore
from proxy.state.webhooks import EventStatus
from proxy.web.webhooks import EMPTY_TWIML
from tests.conftest import write_config
from tests.processes import SidecarProcess
from tests.web.webhook_rig import PHONE, PUBLIC, STATUS, TEXT, TOKEN, TWIML, App, app_server, post, signed
from tests.webhook_app import until


def write_hooks(directory: Path, app_url: str) -> None:
    (directory / "policies").mkdir(exist_ok=True)
    twilio = {"auth_token": "${TWILIO_TEST_TOKEN:-" + TOKEN + "}", "public_url": PUBLIC}
    hooks = {
        "status": {"path": "/hooks/twilio/status", "deliver_to": f"{app_url}/twilio/status", "provider": "twilio",
                   "twilio": twilio, "org": "form:AccountSid"},
        "incoming": {"path": "/hooks/twilio/incoming", "deliver_to": f"{app_url}/twilio/incoming",
                     "provider": "twilio", "mode": "sync", "twilio": {**twilio, "public_url": PUBLIC + "/in"}},
        "calendar": {"path": "/hooks/google/calendar", "deliver_to": f"{app_url}/google/push", "provider": "google",
                     "google": {"channel_token": "channel-secret"}},
    }
    (directory / "policies" / "hooks.yaml").write_text(yaml.safe_dump({"webhooks": hooks}))


def distinct_ports(count: int) -> list[int]:
    """Free loopback ports, all different (two calls of free_port() may return the same one)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start(directory: Path, listen: bool = True, **settings: object) -> tuple[SidecarProcess, int]:
    """A sidecar process with the webhooks listener (when ``listen``) on a port of its own; and that port."""
    data, admin, hooks = distinct_ports(3)
    if listen:
        settings["webhooks"] = {"listen": f"127.0.0.1:{hooks}"}
    path = write_config(directory, {"api": {"url": "http://127.0.0.1:9"}}, listen=f"127.0.0.1:{data}",
                        admin={"listen": f"127.0.0.1:{admin}"}, **settings)
    return SidecarProcess(directory, {}, config=(path, data, admin)), hooks


class Hooked:
    def __init__(self, sidecar: SidecarProcess, port: int, app: App) -> None:
        self.sidecar, self.app = sidecar, app
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def hooked(tmp_path: Path, redis_url: str) -> AsyncIterator[Hooked]:
    app = App(body=TWIML, content_type="text/xml")
    async with app_server(app) as app_url:
        write_hooks(tmp_path, app_url)
        sidecar, port = start(tmp_path, state={"backend": "redis", "redis_url": redis_url},
                              log={"level": "info", "access": True})
        try:
            await sidecar.wait_ready()
            yield Hooked(sidecar, port, app)
        finally:
            sidecar.stop()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisWebhookStore]:
    store = RedisWebhookStore(redis_url)
    await store.start()
    yield store
    await store.close()


async def completed(store: RedisWebhookStore, webhook: str) -> list[str]:
    return [r.id for r in await store.events(webhook, EventStatus.COMPLETED, 10)]


async def test_a_signed_callback_is_delivered_and_a_forged_one_is_not(hooked: Hooked,
                                                                     store: RedisWebhookStore) -> None:
    forged = {"X-Twilio-Signature": "Zm9yZ2Vk", "Content-Type": "application/x-www-form-urlencoded"}
    assert (await post(hooked.url + "/hooks/twilio/status", urlencode(STATUS).encode(), forged))[0] == 403
    status, headers, body = await post(hooked.url + "/hooks/twilio/status", urlencode(STATUS).encode(),
                                       signed(STATUS))
    assert (status, headers["Content-Type"], body) == (200, "text/xml", EMPTY_TWIML)
    (event_id,) = await until(lambda: completed(store, "status"))
    ((method, path, sent, payload),) = hooked.app.received  # the forged one never reached the app
    assert (method, path, payload) == ("POST", "/twilio/status", urlencode(STATUS).encode())
    assert (sent["X-Webhook-Id"], sent["X-Webhook-Attempt"], sent["X-Webhook-Verified"]) == (event_id, "1", "twilio")
    (record,) = await store.events("status", None, 10)
    assert (record.org, record.event_type, record.attempts) == ("AC1", "delivered", 1)


async def test_duplicates_are_delivered_once(hooked: Hooked, store: RedisWebhookStore) -> None:
    headers = {**signed(STATUS), "I-Twilio-Idempotency-Token": "idem-dup"}
    for _ in range(3):
        assert (await post(hooked.url + "/hooks/twilio/status", urlencode(STATUS).encode(), headers))[2] == EMPTY_TWIML
    await until(lambda: completed(store, "status"))
    assert len(hooked.app.received) == 1 and len(await store.events("status", None, 10)) == 1


async def test_sync_mode_returns_the_apps_twiml(hooked: Hooked, store: RedisWebhookStore) -> None:
    incoming = [("MessageSid", "SM9"), ("SmsStatus", "received"), ("From", PHONE), ("Body", TEXT)]
    status, headers, body = await post(hooked.url + "/hooks/twilio/incoming", urlencode(incoming).encode(),
                                       signed(incoming, url=PUBLIC + "/in"))
    assert (status, headers["Content-Type"], body) == (200, "text/xml", TWIML)
    (record,) = await store.events("incoming", None, 10)
    assert (record.status, record.id) == (EventStatus.COMPLETED, hooked.app.received[0][2]["X-Webhook-Id"])


async def test_the_google_token_is_checked(hooked: Hooked, store: RedisWebhookStore) -> None:
    push = {"X-Goog-Channel-ID": "c", "X-Goog-Message-Number": "1", "X-Goog-Resource-State": "sync"}
    assert (await post(hooked.url + "/hooks/google/calendar", headers=push))[0] == 403
    assert (await post(hooked.url + "/hooks/google/calendar",
                       headers={**push, "X-Goog-Channel-Token": "channel-secret"}))[:3:2] == (200, b"")
    assert [r.event_type for r in await store.events("calendar", None, 10)] == ["sync"]


async def test_each_port_serves_only_its_own(hooked: Hooked) -> None:
    admin = hooked.sidecar.admin_url
    assert (await post(hooked.url + "/admin/reload"))[0] == 404
    assert (await post(hooked.url + "/api/x"))[0] == 404
    assert (await post(hooked.sidecar.url + "/hooks/twilio/status", urlencode(STATUS).encode(),
                       signed(STATUS)))[0] == 404
    assert (await post(admin + "/hooks/twilio/status"))[0] == 404


async def test_nothing_from_the_request_reaches_the_log(hooked: Hooked) -> None:
    query = "From=" + PHONE.replace("+", "%2B")
    await post(hooked.url + f"/hooks/twilio/status?{query}", urlencode(STATUS).encode(), {"X-Twilio-Signature": "x"})
    await post(hooked.url + f"/hooks/twilio/status?{query}", urlencode(STATUS).encode(),
               signed(STATUS, url=f"{PUBLIC}?{query}"))
    hooked.sidecar.stop()
    log = hooked.sidecar.log
    assert "webhook request refused" in log and "webhooks listening" in log
    for secret in (PHONE, PHONE[1:], TEXT, TOKEN, "SM1"):
        assert secret not in log


async def test_the_memory_backend_says_events_are_lost_on_restart(tmp_path: Path) -> None:
    write_hooks(tmp_path, "http://127.0.0.1:9")
    sidecar, _ = start(tmp_path, log={"level": "info"})
    try:
        await sidecar.wait_ready()
    finally:
        sidecar.stop()
    assert "lost on restart" in sidecar.log


async def test_without_a_listener_no_port_is_opened(tmp_path: Path) -> None:
    write_hooks(tmp_path, "http://127.0.0.1:9")
    sidecar, _ = start(tmp_path, listen=False, log={"level": "info"})
    try:
        await sidecar.wait_ready()
    finally:
        sidecar.stop()
    assert "webhooks listening" not in sidecar.log


async def test_a_reload_applies_webhook_definitions_but_not_a_new_listener(tmp_path: Path, start_sidecar) -> None:  # type: ignore[no-untyped-def]
    write_hooks(tmp_path, "http://127.0.0.1:9")
    sidecar = await start_sidecar({"api": {"url": "http://127.0.0.1:9"}}, webhooks={"listen": "127.0.0.1:0"})
    assert sidecar.webhooks_address is not None
    url = f"http://127.0.0.1:{sidecar.webhooks_address.port}"
    push = {"X-Goog-Channel-ID": "c", "X-Goog-Message-Number": "1", "X-Goog-Channel-Token": "channel-secret"}
    assert (await post(url + "/hooks/google/calendar", headers=push))[0] == 200
    hooks = yaml.safe_load((tmp_path / "policies" / "hooks.yaml").read_text())
    hooks["webhooks"]["calendar"]["path"] = "/hooks/google/v2"
    (tmp_path / "policies" / "hooks.yaml").write_text(yaml.safe_dump(hooks))
    assert (await sidecar.reload("signal")).result == "ok"
    assert (await post(url + "/hooks/google/calendar", headers=push))[0] == 404
    assert (await post(url + "/hooks/google/v2", headers={**push, "X-Goog-Message-Number": "2"}))[0] == 200

    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["webhooks"]["listen"] = "127.0.0.1:8081"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    attempt = await sidecar.reload("signal")
    assert attempt.result == "error" and "webhooks.listen: cannot change while running" in attempt.problems[0]
    assert (await post(url + "/hooks/google/v2", headers={**push, "X-Goog-Message-Number": "3"}))[0] == 200
