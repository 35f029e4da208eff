"""YAML parsed into a tree that remembers where every value came from.

PyYAML's ``safe_load`` forgets positions and silently keeps the last of two duplicate
keys; a configuration error must name file, line and column, and a duplicate key is
almost always a mistake. So we compose the node graph ourselves and keep the marks.

``${VAR}`` and ``${VAR:-default}`` in string values are expanded from the environment
here, once, so that secrets never need to live in YAML. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from proxy.errors import Problem


@dataclass(frozen=True)
class Mark:
    file: str
    line: int
    column: int


@dataclass
class YNode:
    """A YAML value (a dict of YNode, a list of YNode, or a scalar) with its position."""

    value: Any
    mark: Mark
    raw: str | None = None
    """The scalar as written, for error messages (``'30'`` rather than ``30``, ``${VAR}`` when expanded)."""
    key_marks: dict[str, Mark] = field(default_factory=dict)
    unset: bool = False
    """A ``${VAR}`` in it could not be expanded: already reported, so readers skip the value."""


_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class EnvError(ValueError):
    pass


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; an unset variable without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise EnvError(f"environment variable {name} is not set (write ${{{name}:-default}} for a default)")
            return default
        return value

    return _ENV.sub(substitute, text)


def position_of(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``, counted as PyYAML counts them (its marks and ours agree):
    ``\n``, NEL, LS, PS and a lone ``\r`` end a line; a byte order mark takes no column."""
    line, column = 1, 1
    for i, ch in enumerate(text[:index]):
        if ch in "\n\x85\u2028\u2029" or (ch == "\r" and text[i + 1:i + 2] != "\n"):
            line, column = line + 1, 1
        elif ch != "\ufeff":
            column += 1
    return line, column


def decode(data: bytes, file: str, problems: list[Problem]) -> str | None:
    """The file's bytes as UTF-8 text; bytes that are not UTF-8 are a problem at their line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = position_of(data[:exc.start].decode("utf-8"), exc.start)
        problems.append(Problem(file, line, column, "", f"not UTF-8: byte 0x{data[exc.start]:02x} (save the file as UTF-8)"))
        return None


_FLOW_VARIABLE_HINT = (" (inside { } or [ ] an unquoted ${VAR} reads as a nested mapping: "
                       "quote it, \"${VAR}\", or write the mapping on its own lines)")


def _variable_in_flow(text: str, index: int) -> bool:
    """Whether the error points at the ``{`` of ``${`` (a flow mapping or sequence met a variable)."""
    return text[index:index + 1] == "{" and text[index - 1:index] == "$"


# libyaml's composer (PyYAML's C extension, in its binary wheels) builds the same nodes with the same marks
# as the pure-Python one, about eight times faster: the config and policy files are read at every start and
# reload. The pure-Python one still decides what is refused and how the error reads: it composes again any
# document libyaml refuses, and any with a tab, which libyaml accepts where PyYAML refuses it ("a:  \t1").
# tests/config/test_yaml_loaders.py holds both to the same nodes. PyYAML built without libyaml has only one.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """The node graph of one YAML document (None when empty); ``yaml.YAMLError`` as PyYAML's own loader raises it."""
    if "\t" not in text:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_yaml(text: str, file: str, environ: Mapping[str, str], problems: list[Problem]) -> YNode | None:
    """Parse one YAML document; problems (syntax, duplicates, unset variables) are appended, not raised."""
    try:
        root = compose(text)
    except yaml.reader.ReaderError as exc:  # a character YAML forbids anywhere: no mark, only a position
        line, column = position_of(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        problems.append(Problem(file, line, column, "", f"invalid YAML: character U+{code:04X} is not allowed "
                                                        f"(in a double-quoted string write it as \\u{code:04x})"))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        hint = _FLOW_VARIABLE_HINT if mark and _variable_in_flow(text, mark.index) else ""
        problems.append(Problem(file, line, column, "", f"invalid YAML: {exc.problem or exc.context}{hint}"))
        return None
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 0, 0, "", f"invalid YAML: {exc}"))
        return None
    if root is None:
        return None
    return _convert(root, file, environ, problems, path="")


_constructor = yaml.SafeLoader("")


def _mark(node: yaml.Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(node: yaml.Node, file: str, environ: Mapping[str, str], problems: list[Problem], path: str) -> YNode:
    mark = _mark(node, file)
    if isinstance(node, yaml.MappingNode):
        result = YNode({}, mark)
        for key_node, value_node in node.value:
            # Keys are the text as written: YAML 1.1 would read `on:` (retry.on) as the boolean True.
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(
                _constructor.construct_object(key_node, deep=True))
            key_mark = _mark(key_node, file)
            child_path = f"{path}.{key}" if path else key
            if key in result.value:
                problems.append(Problem(file, key_mark.line, key_mark.column, child_path, "duplicate key"))
                continue
            result.value[key] = _convert(value_node, file, environ, problems, child_path)
            result.key_marks[key] = key_mark
        return result
    if isinstance(node, yaml.SequenceNode):
        items = [_convert(item, file, environ, problems, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return YNode(items, mark)
    value = _constructor.construct_object(node, deep=True)
    if isinstance(value, str) and "$" in value:
        try:
            expanded = expand_env(value, environ)
        except EnvError as exc:
            problems.append(Problem(file, mark.line, mark.column, path, str(exc)))
            return YNode(value, mark, raw=node.value, unset=True)
        value = expanded
    return YNode(value, mark, raw=node.value)


_TYPED = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"})


def typed_scalar(text: str) -> Any:
    """``text`` read as a plain YAML scalar would be when it is a number or a boolean, else None.

    The environment only holds text: ``max_connections: ${N}`` with N=100 must still be the number
    100. Readers try this only after the text itself was refused, so a token ``0123`` stays text."""
    tag = _constructor.resolve(yaml.ScalarNode, text, (True, False))
    return _constructor.construct_object(yaml.ScalarNode(tag, text), deep=True) if tag in _TYPED else None
