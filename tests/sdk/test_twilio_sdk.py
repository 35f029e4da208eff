"""twilio-python, the official SDK, through the sidecar running the shipped Twilio preset.

SDK calls are synchronous: they run in a thread while the sidecar and the fake serve on the loop.
The client is pointed at the sidecar the way README.md recommends: an ``http_client`` that rewrites
``https://api.twilio.com`` (and regional hosts) to the sidecar's ``/twilio`` prefix.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from tests.conftest import StartSidecar, base_url
from tests.sdk.fake_twilio import ACCOUNT, FakeTwilio
from tests.sdk.presets import preset

TIMEOUT = "200ms"
"""The upstream timeout in these tests, below the fake's ``HANG``."""
_TWILIO_HOST = re.compile(r"^https://api(\.[\w-]+)*\.twilio\.com")


class SidecarHttpClient(TwilioHttpClient):
    """Sends every Twilio API call to the sidecar instead (Twilio's own answer on twilio-python#521)."""

    def __init__(self, sidecar: str, timeout: float = 10.0) -> None:
        super().__init__(timeout=timeout)
        self.sidecar = sidecar

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return super().request(method, _TWILIO_HOST.sub(self.sidecar, url), *args, **kwargs)


@pytest.fixture
async def twilio(aiohttp_server: Any, start_sidecar: StartSidecar) -> tuple[FakeTwilio, Client]:
    fake = FakeTwilio()
    server = await aiohttp_server(fake.app())
    sidecar = await start_sidecar(preset("twilio.yaml", "twilio", f"http://127.0.0.1:{server.port}",
                                         timeout=TIMEOUT))
    return fake, Client(ACCOUNT, "auth-token", http_client=SidecarHttpClient(f"{base_url(sidecar)}/twilio"))


async def send(client: Client, to: str) -> Any:
    return await asyncio.to_thread(client.messages.create, to=to, from_="+15005550006", body="hello")


async def test_messages_are_created_fetched_and_listed(twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    sent = await send(client, "+15551230001")
    assert (sent.sid.startswith("SM"), sent.to, sent.status) == (True, "+15551230001", "queued")
    fetched = await asyncio.to_thread(client.messages(sent.sid).fetch)
    listed = await asyncio.to_thread(client.messages.list, limit=5)
    assert fetched.body == "hello" and [m.sid for m in listed] == [sent.sid]
    assert (fake.posts["sms"], fake.gets) == (1, 2)


async def test_sms_and_whatsapp_have_separate_breakers(twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    fake.script["whatsapp"] = [500, 500, 500]
    for _ in range(3):
        with pytest.raises(TwilioRestException) as failed:
            await send(client, "whatsapp:+15551230002")
        assert (failed.value.status, failed.value.code) == (500, 20500)  # Twilio's own error, relayed
    with pytest.raises(TwilioRestException) as refused:
        await send(client, "whatsapp:+15551230002")
    assert (refused.value.status, refused.value.code) == (503, 20503)
    assert "resilience-proxy: circuit twilio_whatsapp open" in refused.value.msg
    assert fake.posts["whatsapp"] == 3  # the open breaker kept the fourth from Twilio
    sms = await send(client, "+15551230002")
    assert sms.to == "+15551230002" and fake.posts["sms"] == 1


async def test_a_20429_is_retried_and_succeeds(twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    fake.script["sms"] = [429]
    sent = await send(client, "+15551230003")
    assert sent.status == "queued" and fake.posts["sms"] == 2


async def test_a_500_on_a_messages_post_is_never_repeated_and_the_open_breaker_says_so(
        twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    fake.script["sms"] = [500]
    with pytest.raises(TwilioRestException) as failed:
        await send(client, "+15551230004")
    assert (failed.value.status, failed.value.code, fake.posts["sms"]) == (500, 20500, 1)  # exactly once
    fake.script["sms"] = [500, 500]
    for _ in range(2):
        with pytest.raises(TwilioRestException):
            await send(client, "+15551230004")
    assert fake.posts["sms"] == 3 and len(fake.messages) == 3  # no SMS went out twice
    with pytest.raises(TwilioRestException) as refused:
        await send(client, "+15551230004")
    error = refused.value
    assert (error.status, error.code, fake.posts["sms"]) == (503, 20503, 3)
    assert error.msg == "Unable to create record: resilience-proxy: circuit twilio_sms open"
    assert error.uri.endswith(f"/Accounts/{ACCOUNT}/Messages.json")


async def test_a_failing_fetch_is_retried(twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    sent = await send(client, "+15551230005")
    fake.read_script = [503, 500]
    fetched = await asyncio.to_thread(client.messages(sent.sid).fetch)
    assert fetched.sid == sent.sid and fake.gets == 3


async def test_a_timed_out_messages_post_is_not_repeated(twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    fake.script["sms"] = ["hang"]
    with pytest.raises(TwilioRestException) as timed_out:
        await send(client, "+15551230006")
    assert (timed_out.value.status, timed_out.value.code) == (504, 20504)
    assert timed_out.value.msg == "Unable to create record: resilience-proxy: twilio: no response in 0.2s"
    assert fake.posts["sms"] == 1 and len(fake.messages) == 1  # Twilio sent it; the sidecar did not send it again


async def test_a_fetch_whose_connection_dropped_is_retried(twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    sent = await send(client, "+15551230007")
    fake.read_script = ["drop", "drop"]
    fetched = await asyncio.to_thread(client.messages(sent.sid).fetch)
    assert fetched.sid == sent.sid and fake.gets == 3  # one try per attempt: nothing retries behind the sidecar


async def test_a_messages_post_whose_connection_dropped_is_not_repeated(twilio: tuple[FakeTwilio, Client]) -> None:
    fake, client = twilio
    fake.script["sms"] = ["drop"]
    with pytest.raises(TwilioRestException) as dropped:
        await send(client, "+15551230008")
    assert (dropped.value.status, dropped.value.code) == (502, 20502)
    assert fake.posts["sms"] == 1 and len(fake.messages) == 1  # Twilio may have sent it: never twice
