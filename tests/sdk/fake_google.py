"""A loopback Google Calendar: freeBusy and events insert/get in Google's JSON and error shapes.

``script`` holds what the next calls answer, per operation (``freebusy``/``insert``): ``"ok"``,
``"store-then-503"`` (the event is stored, then the answer fails, as after a lost response),
``"store-then-hang"`` (stored, answered after ``HANG`` seconds), ``"store-then-drop"`` (stored, then
the connection is closed without a byte of answer: the reply lost on the way), or
a reason (``rateLimitExceeded``, ``quotaExceeded``, ``backendError``) answered as Google does.
A repeated insert of an event id answers 409 ``duplicate``, as Google does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.sdk.fake_twilio import drop

HANG = 0.6
"""How long ``"store-then-hang"`` takes to answer: longer than the tests' upstream timeout."""
_STATUS = {"rateLimitExceeded": (403, "Rate Limit Exceeded", "usageLimits"),
           "userRateLimitExceeded": (403, "User Rate Limit Exceeded", "usageLimits"),
           "quotaExceeded": (403, "Calendar usage limits exceeded.", "usageLimits"),
           "backendError": (503, "Backend Error", "global"),
           "duplicate": (409, "The requested identifier already exists.", "global"),
           "notFound": (404, "Not Found", "global")}


def google_error(reason: str) -> web.Response:
    status, message, domain = _STATUS[reason]
    return web.json_response({"error": {"code": status, "message": message,
                                        "errors": [{"domain": domain, "reason": reason, "message": message}]}},
                             status=status)


class FakeCalendar:
    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {"freebusy": [], "insert": []}
        self.hits: dict[str, int] = {"freebusy": 0, "insert": 0, "get": 0}
        self.events: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/calendar/v3/freeBusy", self.freebusy)
        app.router.add_post("/calendar/v3/calendars/{calendar}/events", self.insert)
        app.router.add_get("/calendar/v3/calendars/{calendar}/events/{event}", self.get)
        return app

    def _step(self, operation: str) -> str:
        self.hits[operation] += 1
        return self.script[operation].pop(0) if self.script[operation] else "ok"

    async def freebusy(self, request: web.Request) -> web.Response:
        step = self._step("freebusy")
        if step != "ok":
            return google_error(step)
        query = await request.json()
        return web.json_response({"kind": "calendar#freeBusy", "timeMin": query["timeMin"], "timeMax": query["timeMax"],
                                  "calendars": {item["id"]: {"busy": []} for item in query["items"]}})

    async def insert(self, request: web.Request) -> web.Response:
        step = self._step("insert")
        if step not in ("ok", "store-then-503", "store-then-hang", "store-then-drop"):
            return google_error(step)
        event = json.loads(await request.read())
        event_id = event.setdefault("id", f"generated{len(self.events)}")
        if event_id in self.events:
            return google_error("duplicate")
        event.update(kind="calendar#event", status="confirmed", organizer={"email": request.match_info["calendar"]})
        self.events[event_id] = event
        if step == "store-then-503":
            return google_error("backendError")
        if step == "store-then-drop":
            drop(request)
        if step == "store-then-hang":
            await asyncio.sleep(HANG)
        return web.json_response(event)

    async def get(self, request: web.Request) -> web.Response:
        self.hits["get"] += 1
        event = self.events.get(request.match_info["event"])
        return web.json_response(event) if event else google_error("notFound")
