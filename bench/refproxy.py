"""Minimal aiohttp reverse proxy: the throughput/latency ceiling for the sidecar.

It does only what any aiohttp proxy must do (one shared ClientSession, buffered body, hop-by-hop
header filtering, uvloop), so the gap between it and the sidecar is the cost of our policy layer.

    python bench/refproxy.py --listen 127.0.0.1:18081 --upstream http://127.0.0.1:18000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

PREFIX = "/bench"

# RFC 9110 section 7.6.1 hop-by-hop headers, plus the ones aiohttp recomputes for the new message.
_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)

SESSION = web.AppKey("session", aiohttp.ClientSession)


def _filter(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Copy headers without hop-by-hop ones (repeated headers such as Set-Cookie are kept)."""
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _DROP)


def strip_prefix(raw_path: str) -> str:
    """Remove the leading /bench so the upstream sees the same path as behind the sidecar."""
    if raw_path == PREFIX or raw_path.startswith((PREFIX + "/", PREFIX + "?")):
        rest = raw_path[len(PREFIX) :]
        return rest if rest.startswith("/") else "/" + rest
    return raw_path


def make_handler(upstream: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Build the catch-all handler; the upstream base is bound once instead of looked up per request."""
    base = upstream.rstrip("/")

    async def handle(request: web.Request) -> web.Response:
        session = request.app[SESSION]
        # encoded=True forwards the raw path byte for byte (percent-encoding untouched).
        url = URL(base + strip_prefix(request.raw_path), encoded=True)
        body = await request.read() if request.can_read_body else None
        try:
            async with session.request(
                request.method,
                url,
                headers=_filter(request.headers),
                data=body,
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                return web.Response(status=resp.status, headers=_filter(resp.headers), body=payload)
        except aiohttp.ClientError as exc:
            return web.Response(status=502, text=f"upstream error: {exc!r}\n")

    return handle


def build_app(upstream: str) -> web.Application:
    """One app, one catch-all route, one session owned by cleanup_ctx."""

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)  # no artificial cap: the client decides concurrency
        # auto_decompress=False passes encoded bodies through untouched, as a proxy should.
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            app[SESSION] = session
            yield

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", make_handler(upstream))
    return app


def main() -> None:
    """Parse the CLI and serve until SIGINT/SIGTERM (run_app turns both into a clean shutdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:18081", help="HOST:PORT to serve on")
    parser.add_argument("--upstream", default="http://127.0.0.1:18000", help="upstream base URL")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    web.run_app(
        build_app(args.upstream),
        host=host,
        port=int(port),
        access_log=None,
        print=None,
        backlog=1024,
        shutdown_timeout=2.0,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
