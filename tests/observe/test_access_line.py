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


class Writes(io.StringIO):
    """A stream that remembers each write, as the pipe under a container runtime would receive them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_lines_shared_with_other_workers_go_out_in_whole_lines_of_at_most_4_kib() -> None:
    """A pipe keeps a write whole only up to PIPE_BUF (4 KiB) when several processes write to it: a
    worker's batch (up to 64 KiB) must not let another worker's lines land inside one of its lines."""
    for shared, most in ((True, 4096), (False, None)):
        stream = Writes()
        access = AccessLog(stream, shared=shared)
        for number in range(100):
            access.record(f"r-{number}", "api", "GET", "/x" * number, 200, 0.001, 0, 33, None, 1, "default")
        access.flush()
        assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
            f"r-{number}" for number in range(100)]
        assert all(text.endswith("\n") for text in stream.writes)
        if most is None:
            assert len(stream.writes) == 1  # one process alone: one write per batch
        else:
            assert len(stream.writes) > 1 and max(len(text) for text in stream.writes) <= most
