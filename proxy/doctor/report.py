"""The doctor's report: one row per check, its status, and the exit status they make.

PASS; WARN (works, but not as production should); FAIL (something configured cannot work);
SKIP (``--skip-network``, or a check that depends on one that failed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proxy.errors import Problem

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Result:
    """One row of the report."""

    check: str
    status: str
    detail: str


def exit_status(results: Sequence[Result], *, strict: bool) -> int:
    statuses = {r.status for r in results}
    if FAIL in statuses:
        return 1
    return 2 if strict and WARN in statuses else 0


def width_for(names: Iterable[str]) -> int:
    """The CHECK column's width for rows named ``names``."""
    return max(len("CHECK"), *(len(name) for name in names))


def header(width: int) -> str:
    return f"{'CHECK':<{width}}  STATUS  DETAIL\n"


def row(result: Result, width: int) -> str:
    return f"{result.check:<{width}}  {result.status:<6}  {result.detail}\n"


def render(results: Sequence[Result]) -> str:
    """The whole table at once."""
    width = width_for(r.check for r in results)
    return header(width) + "".join(row(r, width) for r in results)


def to_json(results: Sequence[Result], problems: Sequence[Problem], status: int) -> str:
    """``doctor -o json``: one document with every check, the config's problems and the exit status."""
    return json.dumps({
        "checks": [{"name": r.check, "status": r.status, "detail": r.detail} for r in results],
        "problems": [{"file": p.file, "line": p.line, "column": p.column, "key": p.path, "message": p.message,
                      "severity": p.severity, "text": str(p)} for p in problems],
        "exit_status": status,
    }, indent=2) + "\n"
