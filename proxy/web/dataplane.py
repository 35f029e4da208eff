"""The data-plane request handler: route, guard, forward, answer errors, record.

Served by aiohttp's low-level ``web.Server`` rather than an ``Application``: one handler sees
every request, including CONNECT and absolute-form targets that a router would 404 before we
could refuse them properly, and no per-request routing or middleware work is spent.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from aiohttp import web

from proxy.config.model import Config
from proxy.errors import InternalError, ProxyError, RequestRejected, UpstreamResponseError
from proxy.guard import BreakerGuard, Ticket
from proxy.observe.access import AccessLog
from proxy.observe.metrics import ProxyMetrics
from proxy.policy.routes import BODY_LIMIT, RouteTable, parse_body_fields
from proxy.state.base import BreakerStore
from proxy.web.forward import Exchange, UpstreamClient, forward, read_small_body
from proxy.web.responses import error_response
from proxy.web.routing import Router

log = logging.getLogger("resilience_proxy")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


class DataPlane:
    """Everything one request needs, built once per config."""

    def __init__(self, config: Config, metrics: ProxyMetrics, access_log: AccessLog, breakers: BreakerStore) -> None:
        self.router = Router(config.upstreams)
        self.routes = {u.name: RouteTable(u) for u in config.upstreams}
        self.clients = {u.name: UpstreamClient(u) for u in config.upstreams}
        self.guard = BreakerGuard(breakers)
        self.metrics = metrics
        self.access_log = access_log
        self.in_flight = 0

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        self.access_log.flush()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        supplied = request.headers.get("X-Request-Id")
        request_id = supplied if supplied and _REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        exchange = Exchange()
        upstream_name: str | None = None
        ticket: Ticket | None = None
        failure: ProxyError | None = None
        self.in_flight += 1
        try:
            resolved = self.router.resolve(request.method, request.raw_path)
            upstream_name = resolved.upstream.name
            table = self.routes[upstream_name]
            buffered = fields = None
            if table.needs_body(request.method, resolved.path):
                buffered = await read_small_body(request, BODY_LIMIT)
                if buffered is not None:
                    fields = parse_body_fields(request.headers.get("Content-Type", ""), buffered)
            route, _ = table.match(request.method, resolved.path, fields)
            ticket = await self.guard.enter(resolved.upstream, route)
            response = await forward(self.clients[upstream_name], request, resolved.url, request_id, exchange,
                                     buffered)
        except ProxyError as error:
            failure = error
            exchange.status, exchange.error = error.status, error.proxy_status
            if isinstance(error, RequestRejected) and upstream_name is None:
                self.metrics.reject(error.proxy_status)
            response = error_response(error, request_id)
        except ConnectionError:
            # The client went away; nothing can reach it, and it is not the sidecar's error.
            # aiohttp finds the transport closed and drops this placeholder quietly.
            exchange.status, exchange.error = exchange.status or 499, "client_disconnected"
            response = web.Response(status=499, reason="Client Closed Request")
        except Exception:
            log.exception("unexpected error while proxying", extra={"request_id": request_id})
            exchange.status, exchange.error = 500, "proxy_internal_error"
            response = error_response(InternalError("internal error in the sidecar", upstream=upstream_name), request_id)
        finally:
            self.in_flight -= 1
            if exchange.truncated:
                failure = UpstreamResponseError(exchange.error or "response cut short", upstream=upstream_name)
            self.guard.leave(ticket, exchange.status if failure is None else 0, failure, exchange.head_seconds)
            elapsed = time.perf_counter() - started
            if upstream_name is not None:
                self.metrics.observe(upstream_name, request.method, exchange.status or 499, elapsed)
            self.access_log.record(request_id, upstream_name, request.method, request.raw_path,
                                   exchange.status or 499, elapsed, exchange.bytes_in, exchange.bytes_out,
                                   exchange.error)
        return response
