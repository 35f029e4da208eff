"""Every config problem names its file, line and column, including those found before YAML has any
marks (characters YAML forbids, bytes that are not UTF-8) and those about values that came from the
environment. One case per problem, with its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from proxy.config.load import load_config
from proxy.errors import ConfigError
from tests.config.test_load import GOOD_POLICY


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, config: bytes, policy: bytes = GOOD_POLICY.encode()) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "twilio.yaml").write_bytes(policy)
    (tmp_path / "config.yaml").write_bytes(config)
    return tmp_path / "config.yaml"


def problems(tmp_path: Path, config: bytes, policy: bytes = GOOD_POLICY.encode(),
             environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, config, policy), environ or {})
    return [str(problem) for problem in caught.value.problems]


@pytest.mark.parametrize(("config", "policy", "expected"), [
    pytest.param(b'listen: "127.0.0.1:8080"\nadmin: {token: "a\x01b"}\n', None,
                 "config.yaml:2:18: invalid YAML: character U+0001 is not allowed (in a double-quoted string write "
                 "it as \\u0001)", id="control-character"),
    pytest.param(b"{}\n", GOOD_POLICY.encode() + b"    # note\x7f\n",
                 "policies/twilio.yaml:7:11: invalid YAML: character U+007F is not allowed (in a double-quoted "
                 "string write it as \\u007f)", id="control-character-in-a-policy-comment"),
    pytest.param(b"log:\r\n  level: \x1binfo\r\n", None,
                 "config.yaml:2:10: invalid YAML: character U+001B is not allowed (in a double-quoted string write "
                 "it as \\u001b)", id="control-character-after-crlf"),
    pytest.param(b"# caf\xc3\xa9 \xe2\x82\xac\nlisten: 127.0.0.1:80\xff\n", None,
                 "config.yaml:2:21: not UTF-8: byte 0xff (save the file as UTF-8)", id="not-utf8-columns-in-characters"),
    pytest.param(b"{}\n", GOOD_POLICY.encode().replace(b"api.twilio", b"api.tw\xe9lio"),
                 "policies/twilio.yaml:3:24: not UTF-8: byte 0xe9 (save the file as UTF-8)", id="latin1-policy"),
    pytest.param("listen: 127.0.0.1:8080\n".encode("utf-16"), None,
                 "config.yaml:1:1: not UTF-8: byte 0xff (save the file as UTF-8)", id="utf16-file"),
    pytest.param(b"", None, "config.yaml:1:1: empty configuration file (write {} for every default)", id="empty-config"),
    pytest.param(b"# only a comment\n", None,
                 "config.yaml:1:1: empty configuration file (write {} for every default)", id="comment-only-config"),
    pytest.param(b"log: {level: info}\npolicies: [policies/]\n", b"# nothing yet\nupstreams: {}\n",
                 "config.yaml:2:1: policies: no upstreams defined in any policy file", id="no-upstreams"),
    pytest.param(b"{}\n", GOOD_POLICY.encode() + b"    ca_bundle: ca.pem\n",
                 "policies/twilio.yaml:7:5: upstreams.twilio.ca_bundle: cannot load policies/ca.pem: no PEM "
                 "certificate in it", id="ca-bundle-without-a-certificate"),
])
def test_each_problem_has_its_location_and_exact_message(tmp_path: Path, config: bytes, policy: bytes | None,
                                                         expected: str) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "ca.pem").write_text("not a certificate\n")
    assert problems(tmp_path, config, policy if policy is not None else GOOD_POLICY.encode()) == [expected]


@pytest.mark.parametrize(("line", "environ", "expected"), [
    pytest.param("listen: ${LISTEN}\n", {"LISTEN": "garbage"},
                 "config.yaml:1:1: listen: invalid address 'garbage' (write host:port, e.g. 127.0.0.1:8080) "
                 "(from ${LISTEN})", id="expanded-to-an-invalid-value"),
    pytest.param("shutdown_grace: ${GRACE}\n", {"GRACE": "30"},
                 "config.yaml:1:1: shutdown_grace: invalid duration '30' (write 250ms, 30s, 15m or 1h) (from ${GRACE})",
                 id="expanded-to-a-bare-number"),
    pytest.param("log:\n  access: ${ACCESS}\n", {},
                 "config.yaml:2:11: log.access: environment variable ACCESS is not set "
                 "(write ${ACCESS:-default} for a default)", id="unset-reported-once"),
])
def test_values_from_the_environment_are_located_and_named(tmp_path: Path, line: str, environ: dict[str, str],
                                                           expected: str) -> None:
    assert problems(tmp_path, line.encode(), environ=environ) == [expected]


def test_numbers_and_booleans_can_come_from_the_environment_and_text_stays_text(tmp_path: Path) -> None:
    policy = GOOD_POLICY + "    max_connections: ${MAX}\n    forwarded_headers: ${FORWARDED}\n"
    config = load_config(write(tmp_path, b"admin: {token: '${TOKEN}'}\nlog:\n  access: ${ACCESS}\n", policy.encode()),
                         {"MAX": "25", "FORWARDED": "true", "TOKEN": "0123", "ACCESS": "false"})
    (twilio,) = config.upstreams
    assert (twilio.max_connections, twilio.forwarded_headers) == (25, True)
    assert (config.admin.token, config.log.access) == ("0123", False)  # not the octal 83


def test_a_directory_given_as_the_config_says_so(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "policies", {})
    assert [str(problem) for problem in caught.value.problems] == ["policies: cannot read: Is a directory"]


def test_a_valid_ca_bundle_loads(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "policies" / "ca.pem"))
    config = load_config(write(tmp_path, b"{}\n", (GOOD_POLICY + "    ca_bundle: ca.pem\n").encode()), {})
    assert config.upstreams[0].ca_bundle == str(tmp_path / "policies" / "ca.pem")
