"""Slack's Web API on 127.0.0.1, answering ``chat.postMessage``, ``auth.test`` and ``conversations.info`` as
Slack does.

Success is HTTP 200 ``{"ok": true, ...}``; most failures are HTTP 200 ``{"ok": false, "error": ...}``;
rate limits are 429 with ``Retry-After``. Every call is recorded (method, Authorization header,
JSON body, arrival time) so tests can assert what left the sidecar.

Answers for the next ``chat.postMessage`` calls come from ``script`` (first first), then
``answer``: ``ok``, ``429:<seconds>``, ``500``, ``hang`` (no answer until :meth:`release`), or any
other word as an ``{"ok": false}`` error code (``channel_not_found``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TS = "1700000000.000100"


@dataclass
class Call:
    method: str
    authorization: str
    body: dict[str, Any]
    at: float
    """time.monotonic() on arrival."""
    answer: str = ""


@dataclass
class FakeSlack:
    token: str = "xoxb-test"
    base_url: str = ""
    """``http://127.0.0.1:<port>/api/`` once served."""
    answer: str = "ok"
    channels: dict[str, str] = field(default_factory=lambda: {"C123": "alerts"})
    """Channel ids ``conversations.info`` knows, and their names."""
    conversations_error: str = ""
    """When set, ``conversations.info`` answers this error (``missing_scope`` names channels:read as needed)."""
    auth_answer: str = "ok"
    """``auth.test``'s answer: ``ok``, or ``hang`` (no answer until :meth:`release`)."""
    script: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", self._post_message)
        app.router.add_post("/api/auth.test", self._auth_test)
        app.router.add_route("*", "/api/conversations.info", self._conversations_info)  # the SDK GETs it
        return app

    def release(self) -> None:
        """Let every hanging call go (they answer ``ok``, to a client that stopped waiting)."""
        self._released.set()

    @property
    def posts(self) -> list[Call]:
        """Every chat.postMessage call, whatever it was answered."""
        return [call for call in self.calls if call.method == "chat.postMessage"]

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the messages Slack accepted."""
        return [call.body for call in self.posts if call.answer == "ok"]

    def texts(self, containing: str = "") -> list[str]:
        """The ``text`` of delivered messages, those containing ``containing``."""
        return [body["text"] for body in self.delivered if containing in body["text"]]

    async def _record(self, request: web.Request, method: str) -> Call:
        raw = await request.read()
        body = json.loads(raw) if raw and request.content_type == "application/json" else {}
        call = Call(method, request.headers.get("Authorization", ""), body, time.monotonic())
        self.calls.append(call)
        return call

    def _auth_error(self, call: Call) -> web.Response | None:
        if not call.authorization:
            return _ok_false("not_authed")
        if call.authorization != f"Bearer {self.token}":
            return _ok_false("invalid_auth")
        return None

    async def _auth_test(self, request: web.Request) -> web.Response:
        call = await self._record(request, "auth.test")
        call.answer = self.auth_answer
        if call.answer == "hang":
            await self._released.wait()
        return self._auth_error(call) or web.json_response(
            {"ok": True, "url": "https://example.slack.com/", "team": "Example", "user": "resilience-proxy",
             "team_id": "T123", "user_id": "U123", "bot_id": "B123"})

    async def _conversations_info(self, request: web.Request) -> web.Response:
        call = await self._record(request, "conversations.info")
        channel = call.body.get("channel") or (await request.post()).get("channel") or request.query.get("channel")
        refused = self._auth_error(call)
        if refused is not None:
            return refused
        if self.conversations_error == "missing_scope":
            return web.json_response({"ok": False, "error": "missing_scope", "needed": "channels:read",
                                      "provided": "chat:write"})
        if self.conversations_error:
            return _ok_false(self.conversations_error)
        if channel not in self.channels:
            return _ok_false("channel_not_found")
        return web.json_response({"ok": True, "channel": {"id": channel, "name": self.channels[channel],
                                                          "is_member": True}})

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        call = await self._record(request, "chat.postMessage")
        answer = call.answer = self.script.pop(0) if self.script else self.answer
        refused = self._auth_error(call)
        if refused is not None:
            call.answer = "invalid_auth"
            return refused
        if answer == "hang":
            await self._released.wait()
            answer = "ok"
        if answer.startswith("429"):
            retry_after = answer.partition(":")[2] or "1"
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": retry_after})
        if answer == "500":
            return web.Response(status=500, text="<html><body>Internal Server Error</body></html>",
                                content_type="text/html")
        if answer != "ok":
            return _ok_false(answer)
        if "channel" not in call.body or not (call.body.get("text") or call.body.get("blocks")):
            call.answer = "invalid_arguments"
            return _ok_false("invalid_arguments")
        return web.json_response({"ok": True, "channel": "C123", "ts": TS,
                                  "message": {"type": "message", "text": call.body.get("text", ""), "ts": TS}})


def _ok_false(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})
