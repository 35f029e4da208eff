"""A provider's request as the pure webhook rules see it: method, raw query, headers, raw body.

The listener builds one from the aiohttp request; verification (:mod:`proxy.policy.webhook_auth`)
and key extraction (:mod:`proxy.policy.webhook_keys`) read it. Form and JSON bodies are parsed at
most once, on first use, and a body that does not parse reads as having no fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl

from proxy.config.webhooks import KeyPart

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class InboundRequest:
    method: str
    query: str
    """The raw query string as the provider sent it (percent-encoding kept): Twilio signs it as written."""
    headers: Mapping[str, str]
    """Lower-case names; the first value of a repeated header."""
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def media_type(self) -> str:
        return self.header("content-type").partition(";")[0].strip().lower()

    @cached_property
    def form(self) -> tuple[tuple[str, str], ...]:
        """The urlencoded body's fields in order, repeats kept; () for any other body or one that is not UTF-8."""
        if self.media_type != FORM:
            return ()
        try:
            return tuple(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return ()

    def form_value(self, name: str) -> str:
        """The first value of form field ``name``; '' when absent."""
        return next((value for key, value in self.form if key == name), "")

    @cached_property
    def json(self) -> Any:
        """The JSON body; None when the body is not JSON."""
        if not self.media_type.endswith("json") or not self.body:
            return None
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None

    def value_of(self, part: KeyPart) -> str:
        """The text at ``header:X``, ``form:F`` or ``json:a.b``; '' when absent (a JSON object or list is absent)."""
        if part.source == "header":
            return self.header(part.name)
        if part.source == "form":
            return self.form_value(part.name)
        node = self.json
        for step in part.name.split("."):
            node = node.get(step) if isinstance(node, dict) else None
        if node is None or isinstance(node, (dict, list)):
            return ""
        return json.dumps(node) if isinstance(node, bool) else str(node)
