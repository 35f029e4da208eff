"""The status page: ``GET /`` on the admin port, with its script, style sheet and icon.

Plain files shipped in the package (``static/``), read once, served with a Content-Security-Policy
that allows nothing but this origin's own script, style, icon and stream: no inline script or
style, no other origin, no framing, no form posts. The page reads ``/admin/stream`` and acts
through the admin API with a Bearer token it keeps for the tab (never a cookie, never a URL), so
it needs nothing the policy forbids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from aiohttp import web

CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
ASSETS = {
    "/": ("status.html", "text/html; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@cache
def asset(name: str) -> bytes:
    """A file of ``static/``, read once per process."""
    return (resources.files(__package__) / "static" / name).read_bytes()


def add_page_routes(app: web.Application) -> None:
    def serve(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=asset(name), headers={**HEADERS, "Content-Type": content_type})
        return handler

    for path, (name, content_type) in ASSETS.items():
        app.router.add_get(path, serve(name, content_type))
