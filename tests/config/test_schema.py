"""The policy schema against the loader: the same keys, the same verdict on real files and fixtures.

The loader is the authority; these tests make the schema unable to drift from it:
- the keys the loader asks for (recorded while it reads a policy that enters every section) are
  exactly the keys the schema lists;
- a policy built from the schema's own examples, using every key, loads without a problem;
- every shipped policy and fixture the loader accepts validates; each key misspelt fails both;
- the committed ``policies/policy.schema.json`` is what ``resilience-proxy schema`` prints.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import trustme
import yaml

from proxy.config import load
from proxy.config.reader import Section
from proxy.config.schema import config_schema, policy_schema, render
from proxy.config.yamltree import YNode, parse_yaml
from proxy.errors import Problem
from tests.test_cli import ROOT, run_cli

SCHEMA = policy_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def plain(node: YNode) -> Any:
    """The YAML as the loader sees it (``on:`` stays the string 'on', not YAML 1.1's True)."""
    if isinstance(node.value, dict):
        return {key: plain(child) for key, child in node.value.items()}
    if isinstance(node.value, list):
        return [plain(child) for child in node.value]
    return node.value


def loader_problems(directory: Path, document: Any) -> list[Problem]:
    file = directory / "policy.yaml"
    file.write_text(yaml.safe_dump(document, sort_keys=False) if not isinstance(document, str) else document)
    problems: list[Problem] = []
    load._read_policy_file(file, {}, problems, ())
    return problems


def schema_errors(document: Any) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(document)]


def _branch(schema: dict[str, Any], want: type) -> dict[str, Any]:
    """The alternative of an ``anyOf`` that describes a dict or a list."""
    for option in schema.get("anyOf", [schema]):
        if want is dict and ("properties" in option or isinstance(option.get("additionalProperties"), dict)):
            return option
        if want is list and "items" in option:
            return option
    return schema


def example(schema: dict[str, Any], names: Iterator[int]) -> Any:
    """A document using every key the schema lists, from its examples (names made unique)."""
    objects = _branch(schema, dict)
    if "properties" in objects:
        return {key: f"n{next(names)}" if key == "name" else example(sub, names)
                for key, sub in objects["properties"].items()}
    arrays = _branch(schema, list)
    if "items" in arrays:
        return [example(arrays["items"], names)]
    if isinstance(objects.get("additionalProperties"), dict):
        return {"x": example(objects["additionalProperties"], names)}
    return schema["examples"][0]


def schema_keys(schema: dict[str, Any], path: str = "") -> set[str]:
    keys: set[str] = set()
    for option in schema.get("anyOf", [schema]):
        for key, sub in option.get("properties", {}).items():
            child = f"{path}.{key}" if path else key
            keys |= {child} | schema_keys(sub, child)
        if isinstance(option.get("additionalProperties"), dict):
            keys |= {f"{path}.*"} | schema_keys(option["additionalProperties"], f"{path}.*")
        if "items" in option:
            keys |= schema_keys(option["items"], f"{path}[]")
    return keys


def key_paths(schema: dict[str, Any], document: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths in ``document`` to every key the schema names (not map entries such as upstream names)."""
    if isinstance(document, dict):
        objects = _branch(schema, dict)
        for key, value in document.items():
            if "properties" in objects:
                yield (*path, key)
                yield from key_paths(objects["properties"][key], value, (*path, key))
            else:
                yield from key_paths(objects["additionalProperties"], value, (*path, key))
    elif isinstance(document, list):
        for index, item in enumerate(document):
            yield from key_paths(_branch(schema, list)["items"], item, (*path, index))


AUTH_SECTIONS = ("twilio", "google", "hmac")


@pytest.fixture
def variants(tmp_path: Path) -> list[dict[str, Any]]:
    """Documents that together use every schema key: a webhook takes only its own provider's section."""
    (tmp_path / "ca.pem").write_bytes(trustme.CA().cert_pem.bytes())  # the loader checks it holds a certificate
    document = example(SCHEMA, itertools.count())
    document["upstreams"]["x"]["routes"][0]["path"] = "/a/{id}"
    found = []
    for provider in AUTH_SECTIONS:
        variant = copy.deepcopy(document)
        hook = variant["webhooks"]["x"]
        hook["provider"] = provider
        for other in set(AUTH_SECTIONS) - {provider}:
            del hook[other]
        found.append(variant)
    return found


@pytest.fixture
def full(variants: list[dict[str, Any]]) -> dict[str, Any]:
    return variants[0]


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_a_policy_using_every_schema_key_loads(tmp_path: Path, variants: list[dict[str, Any]]) -> None:
    for document in variants:
        assert schema_errors(document) == []
        assert [str(p) for p in loader_problems(tmp_path, document)] == []


def test_a_webhook_with_another_providers_section_fails_both(tmp_path: Path, full: dict[str, Any]) -> None:
    full["webhooks"]["x"]["google"] = {"channel_token": "t"}
    assert schema_errors(full)
    assert [p.message for p in loader_problems(tmp_path, full)] == ["only applies with provider: google"]


def test_the_loader_asks_for_exactly_the_schema_keys(tmp_path: Path, variants: list[dict[str, Any]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    asked: set[str] = set()
    original = Section.node

    def record(self: Section, key: str) -> YNode | None:
        path = f"{self.path}.{key}" if self.path else key
        asked.add(re.sub(r"(upstreams|webhooks|overrides|body)\.[^.\[]+", r"\1.*", re.sub(r"\[\d+\]", "[]", path)))
        return original(self, key)

    monkeypatch.setattr(Section, "node", record)
    for document in variants:
        assert loader_problems(tmp_path, document) == []
    assert asked == schema_keys(SCHEMA)


def test_every_misspelt_key_fails_the_loader_and_the_schema(tmp_path: Path, variants: list[dict[str, Any]]) -> None:
    paths = [(index, path) for index, full in enumerate(variants) for path in key_paths(SCHEMA, full)
             if index == 0 or path[-2:-1] in {(name,) for name in AUTH_SECTIONS}]
    assert len(paths) > 60
    for index, path in paths:
        document = copy.deepcopy(variants[index])
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1] + "_"] = parent.pop(path[-1])
        assert schema_errors(document), path
        assert any(p.message == "unknown key" for p in loader_problems(tmp_path, document)), path


FIXTURES = [
    "upstreams:\n  api:\n    url: https://api.example.com\n",
    "upstreams:\n  api:\n    url: ${API_URL:-https://api.example.com}\n    timeout: ${TIMEOUT:-5s}\n",
    "upstreams:\n  a:\n    url: http://127.0.0.1:9\n    breaker: false\n    retry: false\n"
    "    failure_statuses: 503\n    strip_headers: X-Secret\n",
    "upstreams:\n  a:\n    url: http://127.0.0.1:9\n    max_request_body: 1048576\n    routes:\n"
    "      - {name: r, methods: post, path: '/v1/{id}/**', retry: {on: timeout, budget: {ratio: 0.5}}}\n"
    "    rate_limits:\n      - {name: l, key: 'path:id', limit: 5, per: 1m30s, overrides: {acme: 50}}\n",
    "webhooks:\n  w:\n    path: /hooks/w\n    deliver_to: http://127.0.0.1:3000/w\n    provider: google\n"
    "    google: {channel_token: '${TOKEN:-t}'}\n    dedupe: {key: 'header:X-Goog-Channel-ID', window: 2d}\n",
]


@pytest.mark.parametrize("policy", [
    *(pytest.param((ROOT / "policies" / name).read_text(), id=name)
      for name in ("twilio.yaml", "google-calendar.yaml")),
    *(pytest.param(text, id=f"fixture-{index}") for index, text in enumerate(FIXTURES)),
])
def test_what_the_loader_accepts_the_schema_accepts(tmp_path: Path, policy: str) -> None:
    assert loader_problems(tmp_path, policy) == []
    problems: list[Problem] = []
    tree = parse_yaml(policy, "policy.yaml", {}, problems)
    assert tree is not None
    assert schema_errors(plain(tree)) == []


@pytest.mark.parametrize("policy", [
    "upstreams:\n  api:\n    url: https://api.example.com\n    timout: 5s\n",
    "upstreams:\n  api:\n    url: https://api.example.com\n    timeout: 30\n",
    "upstreams:\n  api:\n    url: https://api.example.com\n    retry: {budget: {ratio: 150%}}\n",
    "upstreams:\n  api:\n    url: https://api.example.com\n    breaker: true\n",
    "upstreams:\n  api:\n    prefix: /api\n",
    "webhooks:\n  w:\n    path: /w\n    deliver_to: http://127.0.0.1/w\n    provider: twilio\n",
    "webhooks:\n  w:\n    path: /w\n    deliver_to: ftp://127.0.0.1/w\n    provider: none\n",
    "webhooks:\n  w:\n    path: /w\n    deliver_to: http://127.0.0.1/w\n    provider: none\n    mode: later\n",
])
def test_what_both_refuse(tmp_path: Path, policy: str) -> None:
    assert loader_problems(tmp_path, policy) != []
    assert schema_errors(plain(parse_yaml(policy, "policy.yaml", {}, []))) != []  # type: ignore[arg-type]


def test_the_committed_schema_is_what_the_command_prints() -> None:
    result = run_cli("schema")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(SCHEMA)
    assert (ROOT / "policies" / "policy.schema.json").read_text() == result.stdout
    assert json.loads(result.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", ["twilio.yaml", "google-calendar.yaml"])
def test_shipped_policies_name_the_schema_for_editors(name: str) -> None:
    first = (ROOT / "policies" / name).read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./policy.schema.json"


CONFIG_SCHEMA = config_schema()


def _config_document(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "api.yaml").write_text("upstreams:\n  api:\n    url: https://api.example.com\n")
    return example(CONFIG_SCHEMA, itertools.count())


def test_the_config_schema_is_valid_and_its_example_loads(tmp_path: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(CONFIG_SCHEMA)
    document = _config_document(tmp_path)
    assert list(jsonschema.Draft202012Validator(CONFIG_SCHEMA).iter_errors(document)) == []
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(document))
    load.load_config(tmp_path / "config.yaml", {})


def test_the_config_loader_asks_for_exactly_the_config_schema_keys(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_config_document(tmp_path)))
    asked: set[str] = set()
    original = Section.node

    def record(self: Section, key: str) -> YNode | None:
        path = f"{self.path}.{key}" if self.path else key
        if not path.startswith("upstreams"):
            asked.add(path)
        return original(self, key)

    monkeypatch.setattr(Section, "node", record)
    load.load_config(tmp_path / "config.yaml", {})
    assert asked == schema_keys(CONFIG_SCHEMA)


def test_the_example_config_validates_and_a_misspelt_key_fails() -> None:
    validator = jsonschema.Draft202012Validator(CONFIG_SCHEMA)
    document = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    assert [e.message for e in validator.iter_errors(document)] == []
    document["state"]["redis_timout"] = document["state"].pop("redis_timeout")
    assert [e.message for e in validator.iter_errors(document)] == [
        "Additional properties are not allowed ('redis_timout' was unexpected)"]


def test_schema_config_prints_the_config_schema() -> None:
    result = run_cli("schema", "--config")
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(CONFIG_SCHEMA)
