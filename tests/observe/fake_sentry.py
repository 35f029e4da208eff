"""A loopback stand-in for Sentry's ingestion endpoint: ``POST /api/<project>/envelope/``.

It keeps every envelope both raw (decompressed bytes, to search for leaked secrets) and parsed
(header, items), and can be told to hang instead of answering, like an overloaded ingestion.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

try:
    import brotli
except ImportError:  # the SDK compresses with brotli only when it can import it
    brotli = None


@dataclass
class Envelope:
    header: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]]
    raw: bytes

    def payloads(self, item_type: str) -> list[dict[str, Any]]:
        return [json.loads(payload) for header, payload in self.items if header.get("type") == item_type]


def decode_body(body: bytes, encoding: str) -> bytes:
    """The request body as the SDK wrote it before compressing.

    aiohttp's server undoes gzip/deflate (and brotli, when it can import it) itself, so the body
    usually arrives as the JSON envelope already; anything else is decoded here.
    """
    if body.startswith(b"{"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        assert brotli is not None, "the SDK used brotli, so the module must be importable here"
        return bytes(brotli.decompress(body))
    assert encoding in ("", "identity"), f"unexpected Content-Encoding {encoding!r}"
    return body


def parse_envelope(raw: bytes) -> Envelope:
    """Header line, then per item a JSON header line and a payload (``length`` bytes, or up to a newline)."""
    header_line, _, rest = raw.partition(b"\n")
    items: list[tuple[dict[str, Any], bytes]] = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        if "length" in item_header:
            length = int(item_header["length"])
            payload, rest = rest[:length], rest[length:]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((item_header, payload))
    return Envelope(json.loads(header_line), items, raw)


@dataclass
class FakeSentry:
    port: int = 0
    hang: bool = False
    """Accept the upload but never answer (until the server closes)."""
    envelopes: list[Envelope] = field(default_factory=list)
    encodings: list[str] = field(default_factory=list)
    """The Content-Encoding of every upload (gzip, or br when brotli is installed)."""
    received: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def dsn(self) -> str:
        return f"http://key@127.0.0.1:{self.port}/1"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes for event in envelope.payloads("event")]

    @property
    def raw(self) -> bytes:
        """Every byte that reached "Sentry", decompressed."""
        return b"\n".join(envelope.raw for envelope in self.envelopes)

    async def handle(self, request: web.Request) -> web.Response:
        self.encodings.append(request.headers.get("Content-Encoding", ""))
        raw = decode_body(await request.read(), self.encodings[-1])
        self.envelopes.append(parse_envelope(raw))
        self.received.set()
        if self.hang:
            await asyncio.Event().wait()
        return web.json_response({"id": self.envelopes[-1].header.get("event_id")})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{project}/envelope/", self.handle)
        return app
