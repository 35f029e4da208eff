"""The access line's exact text: what ``json.dumps(line, separators=(",", ":"))`` writes, whatever the path holds."""

from __future__ import annotations

import io
import json

import pytest

from proxy.observe.access import AccessLog


@pytest.mark.parametrize("target", [
    "/2010-04-01/Accounts/AC123/Messages.json?PageSize=20",
    "/calendars/caf\u00e9/events",  # non-ASCII: json escapes it as \u00e9
    "/odd/\x7f/\x01/\"quoted\"/back\\slash",  # DEL, a control character, a quote, a backslash
    "/bytes/\udcff",  # a lone surrogate (a target that was not UTF-8)
])
async def test_each_line_is_the_compact_json_text_of_its_fields(target: str) -> None:
    stream = io.StringIO()
    access = AccessLog(stream)
    access.record("r-1", "api", "GET", target, 200, 0.0123456, 0, 33, None, 1, "default")
    access.record("r-2", None, "POST", target, 404, 1e-7, 10, 0, "destination_not_found")
    access.flush()
    for text in stream.getvalue().splitlines():
        fields = json.loads(text)
        assert text == json.dumps(fields, separators=(",", ":"))
        assert fields["path"] == target.split("?")[0]
    first, second = (json.loads(text) for text in stream.getvalue().splitlines())
    assert (first["duration_ms"], second["duration_ms"], second["route"]) == (12.346, 0.0, None)
