"""A loopback Twilio: Messages create, fetch and list in Twilio's JSON, errors in Twilio's shape.

``script`` holds what the next Messages POSTs answer, per channel (``sms``/``whatsapp``):
``"ok"``, ``"hang"`` (accepted, answered after ``HANG`` seconds), ``"drop"`` (accepted, then the
connection closed without an answer), or an HTTP status whose Twilio error body is sent instead
(429 as error 20429). ``read_script`` likewise for the next GETs (a status, or ``"drop"``).
A 500 is answered after the message was accepted, as a real one might be.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, NoReturn

from aiohttp import web

ACCOUNT = "AC" + "0" * 32
HANG = 0.6
"""How long a ``"hang"`` answer takes: longer than the tests' upstream timeout."""
_ERRORS = {429: (20429, "Too Many Requests"), 500: (20500, "Internal Server Error"),
           503: (20503, "Service Unavailable"), 404: (20404, "The requested resource was not found")}


def twilio_error(status: int) -> web.Response:
    code, message = _ERRORS[status]
    return web.json_response({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                              "status": status}, status=status)


def drop(request: web.Request) -> NoReturn:
    """Close the connection without a byte of answer: a reply lost on the way."""
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError


class FakeTwilio:
    def __init__(self) -> None:
        self.script: dict[str, list[str | int]] = {"sms": [], "whatsapp": []}
        self.posts: dict[str, int] = {"sms": 0, "whatsapp": 0}
        self.gets = 0
        self.read_script: list[int | str] = []
        """Statuses the next GETs answer with Twilio's error body instead of the resource, or ``"drop"``."""
        self.messages: dict[str, dict[str, Any]] = {}
        self._sids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        base = "/2010-04-01/Accounts/{account}"
        app.router.add_post(f"{base}/Messages.json", self.create)
        app.router.add_get(f"{base}/Messages.json", self.list)
        app.router.add_get(base + "/Messages/{sid}.json", self.fetch)
        return app

    async def create(self, request: web.Request) -> web.Response:
        form = await request.post()
        to = str(form["To"])
        channel = "whatsapp" if to.startswith("whatsapp:") else "sms"
        self.posts[channel] += 1
        step = self.script[channel].pop(0) if self.script[channel] else "ok"
        if step == 429 or step == 503:
            return twilio_error(int(step))
        sid = f"SM{next(self._sids):032d}"
        message = {"sid": sid, "account_sid": request.match_info["account"], "to": to, "from": str(form["From"]),
                   "body": str(form["Body"]), "status": "queued", "num_segments": "1", "direction": "outbound-api",
                   "api_version": "2010-04-01", "price": None, "error_code": None, "error_message": None,
                   "date_created": "Tue, 01 Dec 2026 21:00:00 +0000", "date_updated": "Tue, 01 Dec 2026 21:00:00 +0000",
                   "date_sent": None, "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json"}
        self.messages[sid] = message
        if step == 500:
            return twilio_error(500)  # accepted, then failed to answer: a retry would send it twice
        if step == "drop":
            drop(request)
        if step == "hang":
            await asyncio.sleep(HANG)  # accepted, answered too late
        return web.json_response(message, status=201)

    async def fetch(self, request: web.Request) -> web.Response:
        self.gets += 1
        if self.read_script:
            step = self.read_script.pop(0)
            if step == "drop":
                drop(request)
            return twilio_error(int(step))
        message = self.messages.get(request.match_info["sid"])
        return web.json_response(message) if message else twilio_error(404)

    async def list(self, request: web.Request) -> web.Response:
        self.gets += 1
        uri = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json?PageSize=50&Page=0"
        return web.json_response({"messages": list(self.messages.values()), "page": 0, "page_size": 50,
                                  "start": 0, "end": len(self.messages), "uri": uri, "first_page_uri": uri,
                                  "next_page_uri": None, "previous_page_uri": None})
