"""The data-plane request handler: route, forward, answer errors, record.

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
from proxy.errors import InternalError, ProxyError, RequestRejected
from proxy.observe.access import AccessLog
from proxy.observe.metrics import ProxyMetrics
from proxy.web.forward import Exchange, UpstreamClient, forward
from proxy.web.responses import error_response
from proxy.web.routing import Router

log = logging.getLogger("resilience_proxy")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


class DataPlane:
    """Everything one request needs, built once per config."""

    def __init__(self, config: Config, metrics: ProxyMetrics, access_log: AccessLog) -> None:
        self.router = Router(config.upstreams)
        self.clients = {u.name: UpstreamClient(u) for u in config.upstreams}
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
        self.in_flight += 1
        try:
            upstream, url = self.router.resolve(request.method, request.raw_path)
            upstream_name = upstream.name
            response = await forward(self.clients[upstream_name], request, url, request_id, exchange)
        except ProxyError as error:
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
            elapsed = time.perf_counter() - started
            if upstream_name is not None:
                self.metrics.observe(upstream_name, request.method, exchange.status or 499, elapsed)
            self.access_log.record(request_id, upstream_name, request.method, request.raw_path,
                                   exchange.status or 499, elapsed, exchange.bytes_in, exchange.bytes_out,
                                   exchange.error)
        return response
