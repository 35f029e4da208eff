"""Admin API for breakers: read every breaker's state, and operator overrides for the fleet.

    GET  /admin/breakers
    POST /admin/breakers/{upstream}/{route}/force-open | disable | reset

Reads are open on the admin port; mutations need ``Authorization: Bearer <admin.token>`` and
are refused outright when no token is configured.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from proxy.config.model import BreakerId, Config, Route, Upstream
from proxy.policy.breaker import Action
from proxy.state.base import BreakerStore, BreakerView
from proxy.web.admin.auth import check_token
from proxy.web.admin.auth import refuse as _refuse


def _describe(upstream: Upstream, route: Route, view: BreakerView, now: float) -> dict[str, object]:
    return {
        "upstream": upstream.name, "route": route.name, "name": BreakerId.of(upstream, route).name,
        "state": view.state.value, "reason": view.reason, "failures": view.failures,
        "open_until": view.open_until or None,
        "seconds_left": round(max(view.open_until - now, 0.0), 3) if view.open_until else None,
        "forced_by": view.forced_by or None, "changed_at": view.changed_at or None,
    }


def add_breaker_routes(app: web.Application, current: Callable[[], Config], store: BreakerStore) -> None:
    """``current`` returns the running config: the breakers listed and the token follow reloads."""

    async def list_breakers(_: web.Request) -> web.Response:
        config = current()
        pairs = config.breakers()
        views = await store.views([BreakerId.of(u, r).key for u, r in pairs])
        now = time.time()
        # fleet_wide: these views are the fleet's (Redis answers), not this process's own (memory, or Redis down).
        fleet_wide = config.state.backend == "redis" and store.backend_up
        return web.json_response({"breakers": [_describe(u, r, v, now) for (u, r), v in zip(pairs, views)],
                                  "fleet_wide": fleet_wide})

    async def mutate(request: web.Request) -> web.Response:
        config = current()
        refused = check_token(request, config.admin.token)
        if refused is not None:
            return refused
        found = {(u.name, r.name): (u, r) for u, r in config.breakers()}.get((request.match_info["upstream"], request.match_info["route"]))
        if found is None:
            return _refuse(404, "no such breaker (see GET /admin/breakers)")
        actor = request.query.get("by", "").strip()[:64]
        if not actor and request.can_read_body:
            try:
                body = await request.json()
                actor = str(body.get("by", "")).strip()[:64] if isinstance(body, dict) else ""
            except (ValueError, RecursionError):  # RecursionError: JSON nested past Python's stack
                return _refuse(400, "body must be JSON such as {\"by\": \"alice\"}")
        upstream, route = found
        assert route.breaker is not None
        action = Action(request.match_info["action"])
        transition = await store.force(BreakerId.of(upstream, route).key, route.breaker, action, actor or "admin-api")
        view = store.view(BreakerId.of(upstream, route).key)
        return web.json_response({"transition": {"from": transition.from_state, "to": transition.to_state,
                                                 "reason": transition.reason},
                                  "breaker": _describe(upstream, route, view, time.time())})

    app.router.add_get("/admin/breakers", list_breakers)
    actions = "|".join(a.value for a in Action)
    app.router.add_post(f"/admin/breakers/{{upstream}}/{{route}}/{{action:{actions}}}", mutate)
