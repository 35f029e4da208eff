"""libyaml composes the config files (it is faster), PyYAML's own loader decides what is refused and how.

:func:`proxy.config.yamltree.compose` must give exactly the nodes (tags, values, line and column of each)
that ``yaml.compose(..., Loader=yaml.SafeLoader)`` gives, and refuse exactly what it refuses, with the same
message and position: every ``file:line:col`` the config reports depends on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config.yamltree import compose, parse_yaml
from proxy.errors import Problem

ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = sorted(p for pattern in ("*.yaml", "policies/*.yaml", "deploy/**/*.yaml", "tests/**/*.yaml")
                 for p in ROOT.glob(pattern))
ACCEPTED = [
    "a: 1\r\nb: [x, y]\r\n",  # CRLF
    "a: 1\rb: 2\r",  # a lone CR ends a line
    "a: 1\x85b: 2",  # NEL
    "a: é\u2028b: ü\u2029c: 3",  # line and paragraph separators
    "\ufeffa: 1\nb: 2",  # a byte order mark takes no column
    "ä: ö\nüü: [ß, \"€\"]\n😀: [🎉, x]\n",
    "k: |\n  x\n  y\nz: >-\n  p\n  q\nw: |2\n   x\n",
    "a: &x {b: 1}\nc: *x\n",
    "a: 'it''s'\nb: \"\\u00e9\\t\\x41\\U0001F600\"\nc: 'x\n  y'\n",
    "- ${X:-1}\n- on\n- 0123\n- 1e3\n- 0x1F\n- .inf\n- ~\n- 1_000\n- 2001-12-14\n- 190:20:30\n",
    "a: 1 # c\n# d\nb:\n",
    "a:\nb: 1\nx:\n  a:\n  b:\n",
    "? [a, b]\n: c\n[d, e]: f\n",
    "a: !!str 1\nb: !custom 2\n",
    "{a:b}\n", "[a:b]\n", "a: x:y\n", "- - a\n", "{a, b}\n", "[a: 1]\n", "a: {b: 1,}\n", "a: [1,]\n",
    "a: b#c\n", "a: \u00a0x\n", "%YAML 1.1\n---\na: 1\n...\n", "", "# only a comment\n",
    "a: {b:}\n",  # libyaml refuses it, PyYAML accepts it: composed again by PyYAML
    "upstreams:\n  twilio:\n    url: https://api.twilio.com\n    timeout:\n    routes:\n      - {name: sms, methods: [POST]}\n",
]
REFUSED = [
    "a: b: c", "x: [1, 2", "a:\n  - 1\n - 2", "a: \x7f", "a: 1\n---\nb: 2\n", "a: *nope\n", "a: [,]",
    "a: \"unterminated\n", "a: 'x'y", "a:\n\t- 1", "a:    \t 1\n", "key: @x\n", "key: `x\n", "a: {\n",
]
"""``a:  \\t1`` is refused by PyYAML and accepted by libyaml: a text with a tab never goes to libyaml."""


def tree(node: yaml.Node | None) -> Any:
    """Everything the config reader uses of a node: kind, tag, value, position (PyYAML gives a plain
    scalar style None, libyaml ''; neither is read)."""
    if node is None:
        return None
    mark = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, yaml.ScalarNode):
        return ("scalar", node.tag, node.value, mark, node.style or "")
    if isinstance(node, yaml.SequenceNode):
        return ("sequence", node.tag, mark, [tree(item) for item in node.value])
    return ("mapping", node.tag, mark, [(tree(key), tree(value)) for key, value in node.value])


def pyyaml(text: str) -> Any:
    """PyYAML's own loader: the nodes, or the error's type, message and position."""
    try:
        return tree(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        return type(exc), str(exc)


def ours(text: str) -> Any:
    try:
        return tree(compose(text))
    except yaml.YAMLError as exc:
        return type(exc), str(exc)


def test_libyaml_is_used_here() -> None:
    """Otherwise the tests below compare PyYAML with itself (PyYAML's binary wheels include libyaml)."""
    assert hasattr(yaml, "CSafeLoader")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_of_the_repository_composes_as_pyyaml_composes_it(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert ours(text) == pyyaml(text)


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted_documents_compose_to_the_same_nodes(text: str) -> None:
    expected = pyyaml(text)
    assert not (isinstance(expected, tuple) and isinstance(expected[0], type)), expected
    assert ours(text) == expected


@pytest.mark.parametrize("text", REFUSED)
def test_refused_documents_are_refused_with_pyyamls_message_and_position(text: str) -> None:
    expected = pyyaml(text)
    assert isinstance(expected, tuple) and isinstance(expected[0], type), "PyYAML accepts it"
    assert ours(text) == expected


def test_a_tab_pyyaml_refuses_is_still_a_problem_at_its_place() -> None:
    problems: list[Problem] = []
    assert parse_yaml("listen: 127.0.0.1:8080\nlog:    \t{}\n", "c.yaml", {}, problems) is None
    assert [str(p) for p in problems] == ["c.yaml:2:9: invalid YAML: found character '\\t' that cannot start any token"]
