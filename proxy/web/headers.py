"""Which headers cross the sidecar, in each direction.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection and are dropped both
ways, together with any header the ``Connection`` header lists. Toward the third party we
also drop what only concerns the sidecar (Host is rewritten by the client library, the org
header is ours, ``Expect`` was answered here) and, unless configured, forwarding headers that
would reveal internal addresses.
"""

from __future__ import annotations

import re

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config.model import Upstream

_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What aiohttp's server refuses to write in a header (any control character but HTAB)."""
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
     "te", "trailer", "transfer-encoding", "upgrade"}
)
_FORWARDING = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
                         "x-forwarded-port", "x-real-ip"})
_SIDECAR_ONLY = frozenset({"host", "expect"})


class HeaderPolicy:
    """Header filtering for one upstream, with its drop sets computed once."""

    def __init__(self, upstream: Upstream) -> None:
        self._forwarded = upstream.forwarded_headers
        self._drop_request = HOP_BY_HOP | _SIDECAR_ONLY | _FORWARDING | frozenset(upstream.strip_headers)

    def to_upstream(self, request: web.BaseRequest) -> CIMultiDict[str]:
        """The headers sent to the upstream for a client request (its address and Host are looked up
        only when the upstream gets forwarding headers)."""
        incoming = request.headers
        headers = CIMultiDict(_filtered(incoming, self._drop_request))
        if self._forwarded:
            previous = incoming.get("X-Forwarded-For")
            client_ip = request.remote
            if client_ip:
                headers["X-Forwarded-For"] = f"{previous}, {client_ip}" if previous else client_ip
            headers["X-Forwarded-Proto"] = incoming.get("X-Forwarded-Proto", "http")
            if request.host:
                headers["X-Forwarded-Host"] = incoming.get("X-Forwarded-Host", request.host)
        return headers


def to_client(incoming: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    """The upstream's response headers as the client gets them (duplicates such as Set-Cookie kept), as
    pairs: the response makes its own multidict of them.

    A field holding a control character (RFC 9110 forbids them; aiohttp's client parser lets some
    through, its server refuses to write them) is left out: the rest of the answer still reaches
    the client, which matters when it reports a POST that was done (a 502 would invite a resend)."""
    out = _filtered(incoming, HOP_BY_HOP)
    # One scan of all names and values, joined by a character allowed in both, rather than two per field.
    if _FORBIDDEN.search("\t".join(map("\t".join, out))):
        out = [(name, value) for name, value in out if not (_FORBIDDEN.search(name) or _FORBIDDEN.search(value))]
    return out


def _filtered(incoming: CIMultiDictProxy[str], drop: frozenset[str]) -> list[tuple[str, str]]:
    connection = incoming.get("Connection")
    listed = {token.strip().lower() for token in connection.split(",")} if connection else ()
    return [(name, value) for name, value in incoming.items()
            if (lower := name.lower()) not in drop and lower not in listed and not lower.startswith("proxy-")]
