"""The webhooks listener in process: real loopback listener, real app, the memory store (Redis: test_webhooks_redis).

Signatures are made with twilio-python's own RequestValidator; the app is a real aiohttp server that
records what it was sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from urllib.parse import urlencode

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from proxy.config.webhooks import GoogleAuth, HmacAuth, TwilioAuth, Webhook
from proxy.events import WebhookReceived
from proxy.state.memory_webhooks import MemoryWebhookStore
from proxy.state.webhooks import MAX_KEPT_ANSWER, EventStatus
from proxy.web.webhooks import EMPTY_TWIML
from tests.web.webhook_rig import PHONE, PUBLIC, STATUS, TEXT, TOKEN, TWIML, App, app_server, post, serving, signed
from tests.webhook_app import until


@dataclass
class Rig:
    url: str
    app: App
    app_url: str
    store: MemoryWebhookStore
    events: list[WebhookReceived]
    hooks: list[Webhook]

    def results(self) -> list[str]:
        return [event.result for event in self.events]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    app = App()
    store = MemoryWebhookStore()
    events: list[WebhookReceived] = []
    hooks: list[Webhook] = []
    async with app_server(app) as app_url:
        hooks += [
            twilio_hook(app_url),
            Webhook("push", "/hooks/google", f"{app_url}/google", "google", google=GoogleAuth("channel-secret")),
            Webhook("gh", "/hooks/gh", f"{app_url}/gh", "hmac", hmac=HmacAuth("s3cret", "X-Hub-Signature-256"),
                    max_body=1024),
        ]
        async with serving(lambda: tuple(hooks), store, events.append) as url:  # type: ignore[arg-type]
            yield Rig(url, app, app_url, store, events, hooks)


def twilio_hook(app_url: str, **changes: object) -> Webhook:
    hook = Webhook("status", "/hooks/twilio/status", f"{app_url}/twilio/status", "twilio",
                   twilio=TwilioAuth(TOKEN, PUBLIC), org=None)
    return replace(hook, **changes)  # type: ignore[arg-type]


async def pending(store: MemoryWebhookStore, webhook: str) -> int:
    return (await store.stats(webhook)).depth


async def test_a_signed_twilio_callback_is_stored_and_answered_with_empty_twiml(rig: Rig) -> None:
    status, headers, body = await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), signed(STATUS))
    assert (status, headers["Content-Type"], body) == (200, "text/xml", EMPTY_TWIML)
    assert body == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
    (record,) = await rig.store.events("status", None, 10)
    assert (record.status, record.event_type, record.org) == (EventStatus.PENDING, "delivered", "")
    (delivery,) = await rig.store.claim("status", "test", 10, 30.0)
    assert (delivery.method, delivery.body, delivery.verified) == ("POST", urlencode(STATUS).encode(), "twilio")
    names = {name.lower() for name, _ in delivery.headers}
    assert {"content-type", "x-twilio-signature"} <= names and not names & {"host", "content-length", "connection"}
    assert rig.results() == ["accepted"] and rig.app.received == []


async def test_the_query_twilio_called_with_is_signed_and_kept(rig: Rig) -> None:
    headers = signed(STATUS, url=PUBLIC + "?tenant=a%20b")
    status, _, _ = await post(rig.url + "/hooks/twilio/status?tenant=a%20b", urlencode(STATUS).encode(), headers)
    assert status == 200
    (delivery,) = await rig.store.claim("status", "test", 10, 30.0)
    assert delivery.query == "tenant=a%20b"


async def test_a_json_webhook_signed_by_request_validator_is_accepted(rig: Rig) -> None:
    body = b'{"MessageSid": "SM1", "MessageStatus": "sent"}'
    query = f"bodySHA256={hashlib.sha256(body).hexdigest()}"
    headers = {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(f"{PUBLIC}?{query}", {}),
               "Content-Type": "application/json"}
    assert (await post(rig.url + f"/hooks/twilio/status?{query}", body, headers))[0] == 200
    tampered = b'{"MessageSid": "SM1", "MessageStatus": "failed"}'
    status, _, answer = await post(rig.url + f"/hooks/twilio/status?{query}", tampered, headers)
    assert status == 403 and b"bodySHA256 does not match the body" in answer
    (delivery,) = await rig.store.claim("status", "test", 10, 30.0)
    assert (delivery.body, delivery.query) == (body, query)


@pytest.mark.parametrize(("case", "headers"), [
    ("forged", {"X-Twilio-Signature": base64.b64encode(b"f" * 20).decode(),
                "Content-Type": "application/x-www-form-urlencoded"}),
    ("missing", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("wrong url", signed(STATUS, url="https://sidecar.internal:8081/hooks/twilio/status")),
    ("wrong token", signed(STATUS, token="not-the-token")),
])
async def test_a_refused_signature_is_403_with_proxy_status_and_nothing_stored_or_delivered(
        rig: Rig, case: str, headers: dict[str, str]) -> None:
    status, answer, body = await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), headers)
    assert status == 403
    assert answer["Proxy-Status"].startswith("resilience-proxy; error=http_request_denied")
    assert answer["Content-Type"].startswith("application/json") and b"X-Twilio-Signature" in body
    assert await rig.store.events("status", None, 10) == [] and rig.app.received == []
    assert rig.results() == ["rejected_signature"]


async def test_a_duplicate_is_answered_like_the_original_and_stored_once(rig: Rig) -> None:
    headers = {**signed(STATUS), "I-Twilio-Idempotency-Token": "idem-1"}
    first = await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), headers)
    again = await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), headers)
    assert first[0] == again[0] == 200 and first[2] == again[2] == EMPTY_TWIML
    assert len(await rig.store.events("status", None, 10)) == 1
    assert rig.results() == ["accepted", "duplicate"]


async def test_unknown_paths_are_404_and_nothing_else_is_served(rig: Rig) -> None:
    for path in ("/", "/hooks/twilio", "/admin/config", "/metrics", "/twilio/2010-04-01/Accounts.json"):
        status, headers, _ = await post(rig.url + path, b"x")
        assert status == 404, path
        assert headers["Proxy-Status"].startswith("resilience-proxy; error=destination_not_found")
    assert rig.events == []


async def test_a_trailing_slash_reaches_the_webhook(rig: Rig) -> None:
    status, _, _ = await post(rig.url + "/hooks/google/", headers={"X-Goog-Channel-Token": "channel-secret"})
    assert status == 200


async def test_a_body_over_max_body_is_413_by_content_length_and_while_streaming(rig: Rig) -> None:
    status, headers, _ = await post(rig.url + "/hooks/gh", b"x" * 1025)
    assert status == 413 and headers["Proxy-Status"].startswith("resilience-proxy; error=http_request_error")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"y" * 100

    async with aiohttp.ClientSession() as http, http.post(rig.url + "/hooks/gh", data=chunks()) as response:
        assert response.status == 413 and "Content-Length" not in response.request_info.headers
    assert rig.results() == ["too_large", "too_large"]
    assert await rig.store.events("gh", None, 10) == []


async def test_a_body_of_exactly_max_body_is_taken(rig: Rig) -> None:
    body = b"z" * 1024
    signature = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    status, _, answer = await post(rig.url + "/hooks/gh", body, {"X-Hub-Signature-256": f"sha256={signature}"})
    assert (status, answer) == (200, b"")


@pytest.mark.parametrize(("token", "expected"), [("channel-secret", 200), ("guess", 403), (None, 403)])
async def test_google_pushes_are_checked_by_channel_token(rig: Rig, token: str | None, expected: int) -> None:
    headers = {"X-Goog-Channel-ID": "ch-1", "X-Goog-Message-Number": "7", "X-Goog-Resource-State": "exists",
               **({"X-Goog-Channel-Token": token} if token else {})}
    status, answer, body = await post(rig.url + "/hooks/google", headers=headers)
    assert status == expected
    if expected == 200:
        assert (body, answer["Content-Length"]) == (b"", "0")
        (record,) = await rig.store.events("push", None, 10)
        assert record.event_type == "exists"
    else:
        assert await rig.store.events("push", None, 10) == []


@pytest.mark.parametrize(("signature", "expected"), [
    (lambda body: hmac.new(b"s3cret", body, hashlib.sha256).hexdigest(), 200),
    (lambda body: "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest(), 200),
    (lambda body: base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode(), 200),
    (lambda body: hmac.new(b"wrong", body, hashlib.sha256).hexdigest(), 403),
])
async def test_hmac_signed_bodies(rig: Rig, signature: Callable[[bytes], str], expected: int) -> None:
    body = b'{"action": "opened"}'
    status, _, _ = await post(rig.url + "/hooks/gh", body, {"X-Hub-Signature-256": signature(body),
                                                            "Content-Type": "application/json"})
    assert status == expected
    assert len(await rig.store.events("gh", None, 10)) == (1 if expected == 200 else 0)


async def test_sync_mode_relays_the_apps_twiml_and_logs_it_delivered(rig: Rig) -> None:
    rig.hooks[0] = twilio_hook(rig.app_url, mode="sync")
    rig.app.body, rig.app.content_type = TWIML, "application/xml"
    status, headers, body = await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), signed(STATUS))
    assert (status, headers["Content-Type"], body) == (200, "application/xml", TWIML)
    ((method, path, sent, payload),) = rig.app.received
    assert (method, path, payload) == ("POST", "/twilio/status", urlencode(STATUS).encode())
    assert (sent["X-Webhook-Attempt"], sent["X-Webhook-Verified"]) == ("1", "twilio")
    (record,) = await rig.store.events("status", None, 10)
    assert (record.id, record.status) == (sent["X-Webhook-Id"], EventStatus.COMPLETED)
    assert await pending(rig.store, "status") == 0
    assert rig.results() == ["delivered_sync"]


@pytest.mark.parametrize("failure", ["500", "down", "timeout"])
async def test_sync_mode_queues_the_event_when_the_app_fails(rig: Rig, failure: str) -> None:
    hook = twilio_hook(rig.app_url, mode="sync")
    if failure == "500":
        rig.app.status = 500
    elif failure == "timeout":
        rig.app.delay = 2.0
        hook = replace(hook, delivery=replace(hook.delivery, timeout=0.2))
    else:
        hook = replace(hook, deliver_to="http://127.0.0.1:9/twilio/status")
    rig.hooks[0] = hook
    status, headers, body = await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), signed(STATUS))
    assert (status, headers["Content-Type"], body) == (200, "text/xml", EMPTY_TWIML)
    (record,) = await rig.store.events("status", None, 10)
    assert record.status == EventStatus.PENDING
    if rig.app.received:  # the queued event keeps the id the app already saw
        assert rig.app.received[0][2]["X-Webhook-Id"] == record.id
    assert rig.results() == ["accepted"]


async def test_sync_mode_relays_an_apps_4xx_without_queueing(rig: Rig) -> None:
    rig.hooks[0] = twilio_hook(rig.app_url, mode="sync")
    rig.app.status, rig.app.body = 422, b"no"
    status, _, body = await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), signed(STATUS))
    assert (status, body) == (422, b"no")
    assert await pending(rig.store, "status") == 0


async def test_a_twilio_retry_in_sync_mode_gets_the_original_twiml_and_the_app_sees_one_request(rig: Rig) -> None:
    rig.hooks[0] = twilio_hook(rig.app_url, mode="sync")
    rig.app.body, rig.app.content_type = TWIML, "application/xml"
    headers = {**signed(STATUS), "I-Twilio-Idempotency-Token": "idem-7"}
    answers = [await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), headers) for _ in range(2)]
    rig.app.body = b"<Response><Message>changed</Message></Response>"  # the retry must not ask again
    answers.append(await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), headers))
    assert [(status, h["Content-Type"], body) for status, h, body in answers] == [(200, "application/xml", TWIML)] * 3
    assert len(rig.app.received) == 1
    (record,) = await rig.store.events("status", None, 10)
    assert (record.id, record.status) == (rig.app.received[0][2]["X-Webhook-Id"], EventStatus.COMPLETED)
    assert rig.results() == ["delivered_sync", "duplicate", "duplicate"]


async def test_a_sync_duplicate_while_the_original_is_forwarded_gets_the_empty_answer(rig: Rig) -> None:
    rig.hooks[0] = twilio_hook(rig.app_url, mode="sync")
    rig.app.body, rig.app.content_type, rig.app.gate = TWIML, "application/xml", asyncio.Event()
    body = urlencode(STATUS).encode()
    first = asyncio.create_task(post(rig.url + "/hooks/twilio/status", body, signed(STATUS)))
    await until(lambda: rig.app.received)
    status, headers, answer = await post(rig.url + "/hooks/twilio/status", body, signed(STATUS))
    assert (status, headers["Content-Type"], answer) == (200, "text/xml", EMPTY_TWIML)
    rig.app.gate.set()
    assert (await first)[2] == TWIML
    assert len(rig.app.received) == 1
    assert rig.results() == ["duplicate", "delivered_sync"]


async def test_a_sync_answer_over_the_kept_size_leaves_duplicates_the_empty_answer(rig: Rig) -> None:
    rig.hooks[0] = twilio_hook(rig.app_url, mode="sync")
    big = b"<Response>" + b" " * MAX_KEPT_ANSWER + b"</Response>"
    rig.app.body, rig.app.content_type = big, "text/xml"
    answers = [await post(rig.url + "/hooks/twilio/status", urlencode(STATUS).encode(), signed(STATUS))
               for _ in range(2)]
    assert [body for _, _, body in answers] == [big, EMPTY_TWIML]
    assert len(rig.app.received) == 1


async def test_webhook_definitions_follow_the_running_config(rig: Rig) -> None:
    assert (await post(rig.url + "/hooks/new", b"{}"))[0] == 404
    rig.hooks.append(Webhook("new", "/hooks/new", f"{rig.app_url}/new", "none"))
    assert (await post(rig.url + "/hooks/new", b"{}"))[0] == 200
    rig.hooks.pop()
    assert (await post(rig.url + "/hooks/new", b"{}"))[0] == 404


async def test_no_log_line_holds_the_body_query_or_headers(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig.hooks[0] = twilio_hook("http://127.0.0.1:9", mode="sync")
    query = f"From={PHONE.replace('+', '%2B')}"
    await post(rig.url + f"/hooks/twilio/status?{query}", urlencode(STATUS).encode(),
               {"X-Twilio-Signature": "forged", "Content-Type": "application/x-www-form-urlencoded"})
    await post(rig.url + f"/hooks/twilio/status?{query}", urlencode(STATUS).encode(),
               signed(STATUS, url=f"{PUBLIC}?{query}"))
    assert [r.levelname for r in caplog.records if r.name == "resilience_proxy.webhooks"] == ["WARNING", "INFO"]
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        for secret in (PHONE, "15005550006", TEXT, "forged", TOKEN, "SM1", "AC1"):
            assert secret not in text, (secret, text)
