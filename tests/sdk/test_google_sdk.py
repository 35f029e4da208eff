"""google-api-python-client, the official SDK, through the sidecar running the shipped Calendar preset.

The client is built offline (the discovery document ships in the package) with
``client_options={"api_endpoint": ".../google/calendar/v3/"}`` as README.md says; its calls are
synchronous and run in a thread while the sidecar and the fake serve on the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httplib2
import pytest
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tests.conftest import StartSidecar, base_url
from tests.sdk.fake_google import FakeCalendar
from tests.sdk.presets import preset

CALENDAR = "team@example.com"
WINDOW = {"timeMin": "2026-12-02T09:00:00Z", "timeMax": "2026-12-02T17:00:00Z", "items": [{"id": CALENDAR}]}
EVENT_ID = "a1b2c3d4e5v0"  # base32hex, chosen by the client


@pytest.fixture
async def calendar(aiohttp_server: Any, start_sidecar: StartSidecar) -> tuple[FakeCalendar, Any]:
    fake = FakeCalendar()
    server = await aiohttp_server(fake.app())
    sidecar = await start_sidecar(preset("google-calendar.yaml", "google", f"http://127.0.0.1:{server.port}",
                                         timeout="200ms"))
    service = build("calendar", "v3", http=httplib2.Http(timeout=10), static_discovery=True,
                    client_options={"api_endpoint": f"{base_url(sidecar)}/google/calendar/v3/"})
    return fake, service


async def freebusy(service: Any) -> dict[str, Any]:
    return await asyncio.to_thread(service.freebusy().query(body=WINDOW).execute)


async def insert(service: Any, **event: Any) -> dict[str, Any]:
    body = {"summary": "Standup", "start": {"dateTime": "2026-12-02T09:00:00Z"},
            "end": {"dateTime": "2026-12-02T09:15:00Z"}, **event}
    return await asyncio.to_thread(service.events().insert(calendarId=CALENDAR, body=body).execute)


async def test_freebusy_is_retried_on_503(calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["freebusy"] = ["backendError"]
    answer = await freebusy(service)
    assert answer["calendars"] == {CALENDAR: {"busy": []}} and fake.hits["freebusy"] == 2


async def test_a_throttling_403_is_retried_and_a_quota_403_is_not(calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["freebusy"] = ["rateLimitExceeded", "userRateLimitExceeded"]
    assert (await freebusy(service))["kind"] == "calendar#freeBusy"
    assert fake.hits["freebusy"] == 3
    fake.script["freebusy"] = ["quotaExceeded"]
    with pytest.raises(HttpError) as refused:
        await freebusy(service)
    assert refused.value.status_code == 403 and refused.value.error_details[0]["reason"] == "quotaExceeded"
    assert fake.hits["freebusy"] == 4  # exactly once: Google's own answer, relayed


async def test_an_insert_with_an_id_is_retried_and_answers_the_event_it_created(
        calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["insert"] = ["store-then-503"]  # the first attempt created the event, its answer was lost
    event = await insert(service, id=EVENT_ID)
    assert (event["id"], event["summary"], event["status"]) == (EVENT_ID, "Standup", "confirmed")
    assert fake.hits == {"freebusy": 0, "insert": 2, "get": 1}  # retry got 409 duplicate: the event was fetched
    assert list(fake.events) == [EVENT_ID]


async def test_an_insert_with_an_id_that_timed_out_is_retried_and_answers_the_event(
        calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["insert"] = ["store-then-hang"]
    event = await insert(service, id=EVENT_ID)
    assert event["id"] == EVENT_ID and fake.hits == {"freebusy": 0, "insert": 2, "get": 1}
    assert list(fake.events) == [EVENT_ID]


async def test_an_insert_with_an_id_whose_connection_dropped_is_retried_and_answers_the_event(
        calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["insert"] = ["store-then-drop"]  # stored, then the connection closed without an answer
    event = await insert(service, id=EVENT_ID)
    assert (event["id"], event["summary"], event["status"]) == (EVENT_ID, "Standup", "confirmed")
    assert fake.hits == {"freebusy": 0, "insert": 2, "get": 1}  # the retry's 409 duplicate: fetched
    assert list(fake.events) == [EVENT_ID]


async def test_an_insert_without_an_id_whose_connection_dropped_is_not_repeated(
        calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["insert"] = ["store-then-drop"]
    with pytest.raises(HttpError) as failed:
        await insert(service)
    assert failed.value.status_code == 502 and fake.hits["insert"] == 1 and len(fake.events) == 1


async def test_an_insert_with_an_id_is_retried_on_a_throttling_403(calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["insert"] = ["rateLimitExceeded"]
    assert (await insert(service, id=EVENT_ID))["id"] == EVENT_ID
    assert fake.hits == {"freebusy": 0, "insert": 2, "get": 0}


async def test_an_insert_without_an_id_is_never_repeated(calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["insert"] = ["store-then-503"]
    with pytest.raises(HttpError) as failed:
        await insert(service)
    assert failed.value.status_code == 503 and fake.hits["insert"] == 1 and len(fake.events) == 1


async def test_a_first_attempt_duplicate_is_the_apps_own_409(calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    await insert(service, id=EVENT_ID)
    with pytest.raises(HttpError) as duplicate:
        await insert(service, id=EVENT_ID)
    assert duplicate.value.status_code == 409 and fake.hits["get"] == 0


async def test_the_open_breaker_is_an_http_error_with_the_sidecars_reason(calendar: tuple[FakeCalendar, Any]) -> None:
    fake, service = calendar
    fake.script["freebusy"] = ["backendError"] * 3
    with pytest.raises(HttpError):
        await freebusy(service)  # three failures: retrying stops once the breaker opens
    assert fake.hits["freebusy"] == 3
    with pytest.raises(HttpError) as refused:
        await freebusy(service)
    error = refused.value
    assert error.status_code == 503 and fake.hits["freebusy"] == 3
    assert error.reason == "resilience-proxy: circuit google_calendar_freebusy open"
    assert error.error_details == [{"domain": "global", "reason": "backendError",
                                    "message": "resilience-proxy: circuit google_calendar_freebusy open"}]
