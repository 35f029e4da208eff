"""Admin API for the running config.

    GET  /admin/config    what runs: source files, version (content hash), load time, upstreams,
                          and the last reload attempt with its problems (``file:line:col: ...``)
    POST /admin/reload    reload now (bearer token, as every admin mutation); 200 when applied,
                          422 with the problems when the new config was refused
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.config.running import ReloadAttempt, RunningConfig
from proxy.web.admin.auth import check_token


def add_config_routes(app: web.Application, running: Callable[[], RunningConfig],
                      reload: Callable[[str], Awaitable[ReloadAttempt]]) -> None:
    async def show(_: web.Request) -> web.Response:
        # The pid says which worker answered (with --workers N each has its own view).
        return web.json_response({**running().describe(), "pid": os.getpid()})

    async def reload_now(request: web.Request) -> web.Response:
        refused = check_token(request, running().config.admin.token)
        if refused is not None:
            return refused
        attempt = await reload("admin")
        body = {"result": attempt.result, "version": attempt.version, "problems": list(attempt.problems)}
        return web.json_response(body, status=200 if attempt.result == "ok" else 422)

    app.router.add_get("/admin/config", show)
    app.router.add_post("/admin/reload", reload_now)
