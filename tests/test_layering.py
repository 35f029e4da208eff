"""The house's arrows: layers import only downwards, no module cycle exists, and the pure modules stay pure.

Imports are read from the source (every ``import`` statement, those inside functions included), so a
lazy import cannot hide a cycle or a wrong arrow. Purity is checked in a fresh interpreter per module,
as aiohttp's own test_circular_imports does, so that what another test imported cannot hide a violation.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"

LAYERS: list[tuple[str, ...]] = [
    ("proxy.errors", "proxy.clock", "proxy.events", "proxy.config"),
    ("proxy.policy",),
    ("proxy.state",),
    ("proxy.guard", "proxy.limiter", "proxy.observe"),
    ("proxy.web",),
    ("proxy.runtime", "proxy.doctor", "proxy.k8s", "proxy.ctl"),
    ("proxy.cli", "proxy.__main__"),
]
"""Lowest first. A module may import its own layer's modules and any layer below, never one above."""

FORBIDDEN: dict[str, tuple[str, ...]] = {
    # within a layer, the arrows that would still be wrong
    "proxy.errors": ("proxy.",),
    "proxy.clock": ("proxy.",),
    "proxy.events": ("proxy.",),
    "proxy.config": ("proxy.clock", "proxy.events"),
    "proxy.guard": ("proxy.observe", "proxy.limiter"),
    "proxy.limiter": ("proxy.observe", "proxy.guard"),
    "proxy.observe": ("proxy.guard", "proxy.limiter"),
    "proxy.runtime": ("proxy.doctor", "proxy.k8s"),
    "proxy.doctor": ("proxy.runtime", "proxy.k8s"),
    "proxy.k8s": ("proxy.runtime", "proxy.doctor"),
    # a client of the admin port: it knows the sidecar's names, never its servers or stores
    "proxy.ctl": ("proxy.runtime", "proxy.doctor", "proxy.k8s", "proxy.web", "proxy.state", "proxy.observe",
                  "proxy.guard", "proxy.limiter"),
}

PURE = ("proxy.errors", "proxy.clock", "proxy.events", "proxy.config", "proxy.policy", "proxy.observe.scrub",
        "proxy.observe.alerts.rules", "proxy.observe.alerts.damping", "proxy.observe.alerts.format",
        "proxy.web.error_formats", "proxy.web.exchange", "proxy.config.running", "proxy.k8s.inject",
        "proxy.runtime.restarts", "proxy.observe.traffic", "proxy.observe.transitions", "proxy.observe.status")
"""Modules (or whole packages) that decide without I/O: importing them loads no I/O library."""
IO_LIBRARIES = ["asyncio", "aiohttp", "redis", "prometheus_client", "sentry_sdk", "slack_sdk", "uvloop", "yarl"]


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere in its body (``from pkg import module`` counts the module)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    known = set(files)
    return {name: imports_of(path, name, known) for name, path in files.items()}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".") or (prefix.endswith(".") and module.startswith(prefix))


def layer_of(module: str) -> int:
    for rank, members in enumerate(LAYERS):
        if any(_within(module, m) for m in members):
            return rank
    return -1  # the package itself (proxy/__init__.py): below everything


def wrong_arrows(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target == "proxy":
                continue
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module} -> {target} (points up)")
            for owner, banned in FORBIDDEN.items():
                if _within(module, owner) and any(_within(target, b) and not _within(target, owner) for b in banned):
                    wrong.append(f"{module} -> {target} (forbidden for {owner})")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), plus self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_arrow_points_down() -> None:
    assert wrong_arrows(import_graph()) == []


def test_no_import_cycle_even_through_lazy_imports() -> None:
    assert cycles(import_graph()) == []


def test_every_module_has_a_layer() -> None:
    assert [m for m in import_graph() if m != "proxy" and layer_of(m) < 0] == []


def test_a_wrong_import_is_caught(tmp_path: Path) -> None:
    """The checks above would fail on a policy module reaching up into the web layer, and on a cycle."""
    copy = tmp_path / "proxy"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    breaker = copy / "policy" / "breaker.py"
    breaker.write_text(breaker.read_text() + "\n\ndef _late():\n    from proxy.web.dataplane import DataPlane\n")
    errors = copy / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom proxy import events as _events\n")
    events = copy / "events.py"
    events.write_text(events.read_text() + "\nimport proxy.errors\n")
    graph = import_graph(copy)
    assert "proxy.policy.breaker -> proxy.web.dataplane (points up)" in wrong_arrows(graph)
    assert ["proxy.errors", "proxy.events"] in cycles(graph)


def _pure_modules() -> list[str]:
    return sorted(m for m in import_graph() if any(_within(m, p) for p in PURE))


@pytest.mark.parametrize("module", _pure_modules())
def test_pure_module_imports_no_io_library(module: str) -> None:
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {IO_LIBRARIES!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                            cwd=PACKAGE.parent)
    assert result.stdout.strip() == "", f"{module} pulled in {result.stdout.strip()}"


def test_readme_module_map_matches_the_tree() -> None:
    """The map in README.md's Development section names every package and top-level module, and nothing gone."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Development\n\n```\n", 1)[1].split("```", 1)[0]
    named = {line.split()[0] for line in block.splitlines()[1:] if line.startswith("  ") and not line.startswith("   ")}
    present = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir()
               if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and not p.name.startswith("__"))}
    assert named == present
