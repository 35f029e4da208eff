"""Reading a YAML mapping against a schema while collecting every problem.

A :class:`Section` hands out typed values and, instead of raising at the first bad one,
records a :class:`~proxy.errors.Problem` and returns the default, so that ``validate``
can report every error in one run. ``finish()`` reports the keys nobody asked for:
unknown keys are errors, because a misspelt ``timout:`` silently ignored is worse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from proxy.config.yamltree import Mark, YNode, typed_scalar
from proxy.errors import Problem

T = TypeVar("T")
_MISSING: Any = object()


class Section:
    def __init__(self, node: YNode, path: str, problems: list[Problem], *, at: Mark | None = None) -> None:
        self.path = path
        self.problems = problems
        self.at = at or node.mark
        self._node = node
        self._seen: set[str] = set()
        self.valid = isinstance(node.value, dict)
        if not self.valid:
            self.error(self.at, path, f"must be a mapping, not {_kind(node.value)}")

    def error(self, mark: Mark, path: str, message: str) -> None:
        self.problems.append(Problem(mark.file, mark.line, mark.column, path, message))

    def _child_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.valid and key in self._node.value

    def node(self, key: str) -> YNode | None:
        self._seen.add(key)
        return self._node.value.get(key) if self.valid else None

    def mark_of(self, key: str) -> Mark:
        return self._node.key_marks.get(key, self.at) if self.valid else self.at

    def get(self, key: str, parse: Callable[[Any], T], default: T = _MISSING) -> T:
        """The value under ``key`` parsed by ``parse``; a missing required key or a parse error is recorded."""
        node = self.node(key)
        if node is None:
            if default is _MISSING:
                if self.valid:
                    self.error(self.at, self._child_path(key), "is required")
                return None  # type: ignore[return-value]
            return default
        if node.unset:  # its unset ${VAR} is the problem, reported where the YAML was read
            return default if default is not _MISSING else None  # type: ignore[return-value]
        try:
            return _parse(parse, node)
        except ValueError as exc:
            self.error(self.mark_of(key), self._child_path(key), _expanded(str(exc), node))
            return default if default is not _MISSING else None  # type: ignore[return-value]

    def section(self, key: str, *, required: bool = False) -> Section:
        """A nested mapping; an absent optional one reads as empty, so its defaults apply."""
        node = self.node(key)
        if node is None:
            if required and self.valid:
                self.error(self.at, self._child_path(key), "is required")
            return Section(YNode({}, self.at), self._child_path(key), self.problems)
        return Section(node, self._child_path(key), self.problems, at=self.mark_of(key))

    def items(self, key: str) -> Iterator[tuple[str, Section]]:
        """The mappings under a mapping-of-mappings key such as ``upstreams``."""
        outer = self.section(key, required=True)
        if outer.valid:
            for name in list(outer._node.value):
                yield name, outer.section(name)

    def sections_of(self, key: str) -> Iterator[Section]:
        """The mappings in a list-of-mappings key such as ``routes``."""
        node = self.node(key)
        if node is None:
            return
        if not isinstance(node.value, list):
            self.error(self.mark_of(key), self._child_path(key), "must be a list")
            return
        for index, item in enumerate(node.value):
            yield Section(item, f"{self._child_path(key)}[{index}]", self.problems)

    def explicit(self) -> set[str]:
        """The keys present in this mapping (to tell an override from a default)."""
        return set(self._node.value) if self.valid else set()

    def list_of(self, key: str, parse: Callable[[Any], T], default: tuple[T, ...] = ()) -> tuple[T, ...]:
        node = self.node(key)
        if node is None:
            return default
        items = node.value if isinstance(node.value, list) else [node]
        parsed: list[T] = []
        for index, item in enumerate(items):
            if item.unset:
                continue
            try:
                parsed.append(_parse(parse, item))
            except ValueError as exc:
                where = item.mark if isinstance(node.value, list) else self.mark_of(key)
                self.error(where, f"{self._child_path(key)}[{index}]", _expanded(str(exc), item))
        return tuple(parsed)

    def finish(self) -> None:
        """Record every key that no reader asked for."""
        if not self.valid:
            return
        for key in self._node.value:
            if key not in self._seen:
                self.error(self.mark_of(key), self._child_path(key), "unknown key")


def _from_environment(node: YNode) -> bool:
    return node.raw is not None and "${" in node.raw and node.raw != node.value


def _parse(parse: Callable[[Any], T], node: YNode) -> T:
    """``parse`` of the value; a value expanded from ``${VAR}`` that is refused as text is tried once
    more as the number or boolean it spells (the environment holds only text)."""
    try:
        return parse(node.value)
    except ValueError:
        typed = typed_scalar(node.value) if _from_environment(node) and isinstance(node.value, str) else None
        if typed is None:
            raise
        try:
            return parse(typed)
        except ValueError:
            pass
        raise


def _expanded(message: str, node: YNode) -> str:
    """A message about a value that came from the environment says so: the file shows only ``${VAR}``."""
    if _from_environment(node):
        return f"{message} (from {node.raw})"
    return message


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    return f"'{value}'"
