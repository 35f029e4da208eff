"""The doctor's report: one row per check, its status, and the exit status they make.

PASS; WARN (works, but not as production should); FAIL (something configured cannot work);
SKIP (``--skip-network``, or a check that depends on one that failed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def render(results: Sequence[Result]) -> str:
    width = max(len("CHECK"), *(len(r.check) for r in results))
    lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
    lines += [f"{r.check:<{width}}  {r.status:<6}  {r.detail}" for r in results]
    return "\n".join(lines) + "\n"
