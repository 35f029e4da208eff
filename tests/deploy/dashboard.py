"""Reading deploy/grafana/resilience-proxy.json: its panels (rows' nested ones too), PromQL and variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "resilience-proxy.json"
SUBSTITUTIONS = {"$__rate_interval": "15s", "$upstream": ".*", "$route": ".*"}
"""What Grafana puts in place of each variable: All selected (allValue .*), a rate window of 15 s
(four 1 s scrapes and more)."""


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title / refId, PromQL) for every query target of every panel."""
    return [(f"{panel['title']} / {target['refId']}", target["expr"])
            for panel in panels(dashboard) for target in panel.get("targets", [])]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of each ``label_values(SELECTOR, LABEL)`` query variable."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"variable {variable['name']}: only label_values(SELECTOR, LABEL) is understood here: {query}"
        found.append((variable["name"], match.group(1), match.group(2)))
    return found


def substitute(expr: str) -> str:
    """The expression as Grafana sends it with All selected; every variable must be known here."""
    for name, value in sorted(SUBSTITUTIONS.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value).replace("${" + name[1:] + "}", value)
    assert "$" not in expr, f"a variable this test does not know: {expr}"
    return expr
