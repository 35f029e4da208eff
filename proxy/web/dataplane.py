"""The data-plane request handler: a request passes its stages once each, in order (route, admit
limits, body, attempts under the breaker, relay); errors are answered and every request recorded.

Served by aiohttp's low-level ``web.Server`` rather than an ``Application``: one handler sees
every request, including CONNECT and absolute-form targets that a router would 404 before we
could refuse them properly, and no per-request routing or middleware work is spent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from aiohttp import web

from proxy.config.model import Config, Route, Upstream
from proxy.errors import InternalError, ProxyError
from proxy.events import EventBus, RequestEnded
from proxy.guard import Guard, Reply
from proxy.limiter import Limiter
from proxy.observe.access import AccessLog
from proxy.policy.classify import CLIENT_DISCONNECTED, names_other_conflict, throttle_reason
from proxy.policy.limitkeys import RequestFacts
from proxy.policy.ratelimit import Check
from proxy.policy.retry import body_key, fetch_duplicate, parse_retry_after
from proxy.policy.routing import BODY_LIMIT, Resolved, Router, RouteTable, parse_body_fields
from proxy.web.body import BodyStream, check_length, read_small_body, request_body
from proxy.web.duplicates import DUPLICATE_HEADER, fetch_created
from proxy.web.exchange import Exchange
from proxy.web.forward import UpstreamClient, read_error_body, relay, try_once
from proxy.web.responses import error_response

log = logging.getLogger("resilience_proxy")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
ATTEMPTS_HEADER = "X-Resilience-Attempts"
"""How many attempts the answer took (1 when it was not retried)."""


def new_request_id() -> str:
    """32 hex digits, as ``uuid4().hex`` gave. An id to find a request by, not a secret (a client may send
    its own), so it comes from ``random`` (seeded from the OS, reseeded in a forked child) rather than
    from a system call per request as ``uuid4`` makes."""
    return random.randbytes(16).hex()


class Call(NamedTuple):
    """What each attempt of one request needs; the guard hands it back to :func:`try_upstream` unopened."""

    client: UpstreamClient
    request: web.BaseRequest
    url: str
    body: BodyStream | bytes | None
    route: Route
    checks: Sequence[Check]
    """The request's rate-limit buckets, held if the upstream throttles it."""
    limiter: Limiter


_NO_CHECKS: Sequence[Check] = ()


class DataPlane:
    """Everything one request needs, built once per config (and again on each reload).

    The guard (retry budgets) and the limiter (its rejection cache) sit on the process's breaker
    and limit stores, which outlive every data plane: a reload swaps routes and policies, never
    the state that counts failures and calls. Only the upstream connection pools belong to one
    data plane, and :meth:`close_clients` closes them once its last request has ended.
    """

    def __init__(self, config: Config, events: EventBus, access_log: AccessLog, guard: Guard,
                 limiter: Limiter, reuse: Mapping[str, UpstreamClient] | None = None) -> None:
        """``reuse``: the previous data plane's clients; an upstream whose settings did not change
        keeps its pool, so a reload does not reopen every TLS connection to every third party."""
        self.config = config
        self.router = Router(config.upstreams)
        self.routes = {u.name: RouteTable(u) for u in config.upstreams}
        reuse = reuse or {}
        # Not with a CA bundle: its file may have changed under the same name (that is what reloaded).
        self.clients = {u.name: reuse[u.name] if u.name in reuse and reuse[u.name].upstream == u and not u.ca_bundle
                        else UpstreamClient(u) for u in config.upstreams}
        self.events = events
        self.guard = guard
        self.limiter = limiter
        self._org_header = config.org_header
        self._client_ip_header = config.client_ip_header
        self.access_log = access_log
        self.in_flight = 0
        self._idle = asyncio.Event()

    async def wait_idle(self) -> None:
        """Until no request is in flight here (a replaced data plane receives no new ones)."""
        while self.in_flight:
            self._idle.clear()
            await self._idle.wait()

    async def close_clients(self, keep: Iterable[UpstreamClient] = ()) -> None:
        """Close the connection pools, except those in ``keep`` (still used by a newer data plane)."""
        kept = {id(client) for client in keep}
        for client in self.clients.values():
            if id(client) not in kept:
                await client.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request: answered by the upstream or by the sidecar, counted and logged either way."""
        started = time.perf_counter()
        supplied = request.headers.get("X-Request-Id")
        request_id = supplied if supplied and _REQUEST_ID.fullmatch(supplied) else new_request_id()
        exchange = Exchange()
        upstream_name: str | None = None
        error_format = "generic"  # until the upstream is known: a 404 belongs to no vendor
        message = ""
        self.in_flight += 1
        try:
            resolved = self.router.resolve(request.method, request.raw_path)
            upstream_name, error_format = resolved.upstream.name, resolved.upstream.error_format
            response = await self._proxy(request, resolved, exchange, request_id)
        except ProxyError as error:
            exchange.status, exchange.error, message = error.status, error.proxy_status, error.message
            response = error_response(error, request_id, error_format)
        except ConnectionError:
            # The client went away; nothing can reach it, and it is not the sidecar's error.
            # aiohttp finds the transport closed and drops this placeholder quietly.
            exchange.status, exchange.error = exchange.status or 499, CLIENT_DISCONNECTED
            response = web.Response(status=499, reason="Client Closed Request")
        except Exception:
            log.exception("unexpected error while proxying", extra={"request_id": request_id})
            exchange.status, exchange.error, message = 500, "proxy_internal_error", "internal error in the sidecar"
            response = error_response(InternalError("internal error in the sidecar", upstream=upstream_name),
                                      request_id, error_format)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
            elapsed = time.perf_counter() - started
            self.events.emit(RequestEnded(request_id, upstream_name, exchange.route, request.method,
                                          exchange.status or 499, elapsed, exchange.attempts, exchange.error, message))
            self.access_log.record(request_id, upstream_name, request.method, request.raw_path,
                                   exchange.status or 499, elapsed, exchange.bytes_in, exchange.bytes_out,
                                   exchange.error, exchange.attempts, exchange.route)
        return response

    async def _proxy(self, request: web.BaseRequest, resolved: Resolved, exchange: Exchange,
                     request_id: str) -> web.StreamResponse:
        """The stages, each entered once and in order: route, admit limits, body, attempts under the
        breaker, relay."""
        upstream = resolved.upstream
        check_length(request, upstream)
        route, captures, buffered = await self._route(request, resolved)
        exchange.route = route.name
        added = {"X-Request-Id": request_id}
        checks = await self._admit(request, upstream, route, captures, added) if route.rate_limits else _NO_CHECKS
        retry = route.retry
        body = await request_body(request, upstream, retry, buffered, exchange)
        buffered = body if isinstance(body, bytes) else None
        key = body_key(retry, parse_body_fields(request.headers.get("Content-Type", ""), buffered)
                       if retry.idempotent_when_body_has and buffered is not None else None)
        keyed = key is not None or bool(retry.idempotency_header and request.headers.get(retry.idempotency_header))
        client, url = self.clients[upstream.name], resolved.url
        final = await self.guard.run(upstream, route, request.method, not isinstance(body, BodyStream), keyed,
                                     try_upstream, Call(client, request, url, body, route, checks, self.limiter))
        exchange.attempts = final.number
        if final.failure is not None:
            raise final.failure
        exchange.status = final.status
        added[ATTEMPTS_HEADER] = str(final.number)
        if key is not None and fetch_duplicate(retry, final.status, final.number, key):
            # The 409, relayed if the lookup finds nothing.
            kept = await read_error_body(final.response, upstream.timeout)
            other = names_other_conflict(kept[1] if kept else None)
            created = None if other else await fetch_created(client, request, url, key, upstream.timeout)
            if created is not None:
                final.release()
                added[DUPLICATE_HEADER] = "fetched"
                return await relay(created, request, exchange, upstream, added)
            final.body = kept[0] if kept else None
        return await relay(final.response, request, exchange, upstream, added, final.body)

    async def _route(self, request: web.BaseRequest, resolved: Resolved) -> tuple[Route, dict[str, str], bytes | None]:
        """The request's route, its path captures, and its body if it had to be read to decide (small bodies only)."""
        table = self.routes[resolved.upstream.name]
        if not table.has_routes:
            return table.default, {}, None
        route, captures = table.by_head(request.method, resolved.path)
        if route is not None:
            return route, captures, None
        buffered = await read_small_body(request, BODY_LIMIT)
        fields = parse_body_fields(request.headers.get("Content-Type", ""), buffered) if buffered is not None else None
        route, captures = table.match(request.method, resolved.path, fields)
        return route, captures, buffered

    async def _admit(self, request: web.BaseRequest, upstream: Upstream, route: Route, captures: dict[str, str],
                     added: dict[str, str]) -> Sequence[Check]:
        """The route's rate limits: raises when one rejects; adds the RateLimit fields to ``added``."""
        facts = RequestFacts(request.headers, request.remote, captures, self._org_header, self._client_ip_header)
        checks, fields = await self.limiter.admit(upstream, route, facts)
        added.update(fields)
        return checks


async def try_upstream(call: Call, timeout: float) -> Reply:
    """One attempt, as the guard makes it. A throttling answer is told to the limiter at once, so that
    the fleet holds the request's buckets from when the upstream said so, while this request may still
    wait to retry."""
    reply = await try_once(call.client, call.request, call.url, call.body, timeout)
    reason = throttle_reason(reply.status, reply.peeked)
    if reason is not None:
        reply.throttle = reason
        call.limiter.throttled(call.client.upstream, call.route, call.checks, reply.status, reason,
                               parse_retry_after(reply.retry_after, time.time()))
    return reply
