"""Loading real files: defaults, overrides, and one case per kind of error with its exact message."""

import os
from pathlib import Path

import pytest

from proxy.config.load import load_config
from proxy.errors import ConfigError

GOOD_POLICY = """\
upstreams:
  twilio:
    url: https://api.twilio.com
    prefix: /twilio
    timeout: 10s
    connect_timeout: 2s
"""


def write(tmp_path: Path, config: str, **policies: str) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    for name, text in policies.items():
        (tmp_path / "policies" / f"{name}.yaml").write_text(text)
    (tmp_path / "config.yaml").write_text(config)
    return tmp_path / "config.yaml"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def errors(tmp_path: Path, config: str, environ: dict[str, str] | None = None, **policies: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, config, **policies), environ or {})
    return [str(p) for p in caught.value.problems]


def test_defaults_apply_and_secure_addresses_are_loopback(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "policies: [policies/]\n", twilio=GOOD_POLICY), {})
    assert str(config.listen) == "127.0.0.1:8080"
    assert str(config.admin.listen) == "127.0.0.1:9901"
    assert config.state.backend == "memory"
    assert config.shutdown_grace == 20.0
    (twilio,) = config.upstreams
    assert (twilio.name, twilio.url, twilio.prefix, twilio.timeout, twilio.connect_timeout) == (
        "twilio", "https://api.twilio.com", "/twilio", 10.0, 2.0)
    assert twilio.strip_headers == ("x-org-id", "x-forwarded-for")
    assert config.policy_files == ("policies/twilio.yaml",)


def test_example_config_in_the_repository_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    config = load_config("config.example.yaml", {})
    assert {u.name for u in config.upstreams} == {"twilio", "google"}


def test_environment_variables_fill_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "state:\n  backend: redis\n  redis_url: ${REDIS_URL:-redis://x}\n",
                               twilio=GOOD_POLICY), {"REDIS_URL": "redis://10.1.2.3:6379/2"})
    assert config.state.redis_url == "redis://10.1.2.3:6379/2"


def test_invalid_duration_names_file_line_column_and_key(tmp_path: Path) -> None:
    policy = GOOD_POLICY.replace("timeout: 10s", "timeout: 30")
    assert errors(tmp_path, "{}\n", twilio=policy) == [
        "policies/twilio.yaml:5:5: upstreams.twilio.timeout: invalid duration '30' (write 250ms, 30s, 15m or 1h)"]


@pytest.mark.parametrize(("config", "policy", "expected"), [
    pytest.param("listen: 8080\n", GOOD_POLICY,
                 "config.yaml:1:1: listen: invalid address '8080' (write host:port, e.g. 127.0.0.1:8080)",
                 id="bad-address"),
    pytest.param("lisen: 127.0.0.1:8080\n", GOOD_POLICY, "config.yaml:1:1: lisen: unknown key", id="unknown-key"),
    pytest.param("state:\n  backend: postgres\n", GOOD_POLICY,
                 "config.yaml:2:3: state.backend: must be one of memory, redis, not 'postgres'", id="bad-choice"),
    pytest.param("state:\n  redis_url: ${REDIS_URL}\n", GOOD_POLICY,
                 "config.yaml:2:14: state.redis_url: environment variable REDIS_URL is not set "
                 "(write ${REDIS_URL:-default} for a default)", id="unset-env"),
    pytest.param("admin: 127.0.0.1:9901\n", GOOD_POLICY,
                 "config.yaml:1:1: admin: must be a mapping, not '127.0.0.1:9901'", id="not-a-mapping"),
    pytest.param("listen: 127.0.0.1:9000\nadmin:\n  listen: 127.0.0.1:9000\n", GOOD_POLICY,
                 "config.yaml:2:1: admin.listen: must differ from listen (127.0.0.1:9000)", id="same-ports"),
    pytest.param("policies: [missing/]\n", GOOD_POLICY,
                 "config.yaml:1:12: policies[0]: no such file or directory: missing", id="missing-policy-dir"),
    pytest.param("listen: [a\n", GOOD_POLICY,
                 "config.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'", id="yaml-syntax"),
    pytest.param("state: {redis_url: ${REDIS_URL}}\n", GOOD_POLICY,
                 "config.yaml:1:21: invalid YAML: expected ',' or '}', but got '{' (inside { } or [ ] an unquoted "
                 "${VAR} reads as a nested mapping: quote it, \"${VAR}\", or write the mapping on its own lines)",
                 id="variable-in-flow-mapping"),
    pytest.param("log:\n  level: info\n  level: debug\n", GOOD_POLICY,
                 "config.yaml:3:3: log.level: duplicate key", id="duplicate-key"),
    pytest.param("{}\n", GOOD_POLICY.replace("    prefix: /twilio\n", "    prefix: twilio\n"),
                 "policies/twilio.yaml:4:5: upstreams.twilio.prefix: invalid prefix 'twilio' (write a path such as "
                 "/twilio)", id="bad-prefix"),
    pytest.param("{}\n", GOOD_POLICY.replace("    url: https://api.twilio.com\n", ""),
                 "policies/twilio.yaml:2:3: upstreams.twilio.url: is required", id="missing-url"),
    pytest.param("{}\n", GOOD_POLICY + "    timout: 5s\n",
                 "policies/twilio.yaml:7:5: upstreams.twilio.timout: unknown key", id="misspelt-key"),
    pytest.param("{}\n", GOOD_POLICY.replace("timeout: 10s", "timeout: 0s"),
                 "policies/twilio.yaml:5:5: upstreams.twilio.timeout: must be greater than zero, not '0s'",
                 id="zero-timeout"),
    pytest.param("{}\n", GOOD_POLICY + "    max_connections: many\n",
                 "policies/twilio.yaml:7:5: upstreams.twilio.max_connections: must be a whole number >= 1, not 'many'",
                 id="bad-int"),
    pytest.param("{}\n", GOOD_POLICY + "    ca_bundle: certs/ca.pem\n",
                 "policies/twilio.yaml:7:5: upstreams.twilio.ca_bundle: no such file: policies/certs/ca.pem",
                 id="missing-ca-bundle"),
    pytest.param("{}\n", "", "policies/twilio.yaml:1:1: empty policy file (expected 'upstreams:')", id="empty-policy"),
    pytest.param("{}\n", "upstream:\n  x: {}\n",
                 "policies/twilio.yaml:1:1: upstreams: is required", id="missing-upstreams"),
    pytest.param("{}\n", GOOD_POLICY + "    breaker: {consecutive_failures: 0}\n",
                 "policies/twilio.yaml:7:5: upstreams.twilio.breaker: no trip condition: set consecutive_failures "
                 "or failure_rate (or write breaker: false)", id="breaker-without-trip"),
    pytest.param("{}\n", GOOD_POLICY + "    breaker: {failure_rate: 150%}\n",
                 "policies/twilio.yaml:7:15: upstreams.twilio.breaker.failure_rate: invalid share '150%' "
                 "(write 50% or 0.5)", id="bad-rate"),
    pytest.param("{}\n", GOOD_POLICY + "    breaker: {open_for: 30s, open_for_max: 10s}\n",
                 "policies/twilio.yaml:7:30: upstreams.twilio.breaker.open_for_max: must be at least open_for (30s)",
                 id="cap-below-open-time"),
    pytest.param("{}\n", GOOD_POLICY + "    failure_statuses: [5xx, 429]\n",
                 "policies/twilio.yaml:7:5: upstreams.twilio.failure_statuses: 429 is a rate-limit signal, never a "
                 "breaker failure", id="429-as-failure"),
    pytest.param("{}\n", GOOD_POLICY + "    routes:\n      - {name: sms, methods: [SEND]}\n",
                 "policies/twilio.yaml:8:31: upstreams.twilio.routes[0].methods[0]: unknown HTTP method 'SEND' "
                 "(one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT)", id="bad-method"),
    pytest.param("{}\n", GOOD_POLICY + "    routes:\n      - name: sms\n        path: /Accounts/AC*\n",
                 "policies/twilio.yaml:9:9: upstreams.twilio.routes[0].path: invalid path pattern "
                 "'/Accounts/AC*': bad segment 'AC*' (* must be a whole segment, {name} a Python-style name)",
                 id="bad-pattern"),
    pytest.param("{}\n", GOOD_POLICY + "    routes:\n      - {name: sms}\n      - {name: sms}\n",
                 "policies/twilio.yaml:9:10: upstreams.twilio.routes[1].name: 'sms' is already a route of this "
                 "upstream", id="duplicate-route"),
    pytest.param("{}\n", GOOD_POLICY + "    retry: {on: [connect_eror]}\n",
                 "policies/twilio.yaml:7:18: upstreams.twilio.retry.on[0]: invalid retry condition 'connect_eror' "
                 "(one of connect_error, rate_limited, reset, timeout, or a status)", id="bad-retry-condition"),
    pytest.param("{}\n", GOOD_POLICY + "    error_format: slack\n",
                 "policies/twilio.yaml:7:5: upstreams.twilio.error_format: must be one of generic, twilio, google, "
                 "not 'slack'", id="bad-error-format"),
    pytest.param("{}\n", GOOD_POLICY + "    retry: {on_duplicate: fetch}\n",
                 "policies/twilio.yaml:7:13: upstreams.twilio.retry.on_duplicate: fetch needs idempotent_when_body_has "
                 "(the body field naming the resource)", id="fetch-without-body-key"),
    pytest.param("{}\n", GOOD_POLICY + "    retry: {on_duplicate: get}\n",
                 "policies/twilio.yaml:7:13: upstreams.twilio.retry.on_duplicate: must be one of relay, fetch, "
                 "not 'get'", id="bad-on-duplicate"),
    pytest.param("{}\n", GOOD_POLICY + "    retry: {idempotent_when_body_has: ''}\n",
                 "policies/twilio.yaml:7:13: upstreams.twilio.retry.idempotent_when_body_has: must be a non-empty "
                 "string, not ''", id="empty-body-key"),
    pytest.param("{}\n", GOOD_POLICY + "    retry:\n      backoff: {initial: 5s, max: 1s}\n",
                 "policies/twilio.yaml:8:30: upstreams.twilio.retry.backoff.max: must be at least initial (5s)",
                 id="backoff-cap-below-initial"),
    pytest.param("{}\n", GOOD_POLICY + "    retry: {budget: {ratio: 150%}}\n",
                 "policies/twilio.yaml:7:22: upstreams.twilio.retry.budget.ratio: a retry budget over 100% ('150%') "
                 "lets retries more than double the load on a failing upstream: write at most 100% (e.g. 20%)",
                 id="budget-over-100-percent"),
    pytest.param("{}\n", GOOD_POLICY + "    retry: {budget: {ratio: -5%}}\n",
                 "policies/twilio.yaml:7:22: upstreams.twilio.retry.budget.ratio: invalid share '-5%' (write 50% or 0.5)",
                 id="budget-negative"),
    pytest.param("{}\n", GOOD_POLICY + "    retry: {attempts: -1}\n",
                 "policies/twilio.yaml:7:13: upstreams.twilio.retry.attempts: must be a whole number >= 0, not '-1'",
                 id="negative-attempts"),
    pytest.param("{}\n", GOOD_POLICY + "    routes:\n      - {name: sms, breaker: {open_fr: 1s}}\n",
                 "policies/twilio.yaml:8:31: upstreams.twilio.routes[0].breaker.open_fr: unknown key",
                 id="route-breaker-typo"),
])
def test_each_kind_of_error_has_one_exact_message(tmp_path: Path, config: str, policy: str, expected: str) -> None:
    assert expected in errors(tmp_path, config, twilio=policy)


def test_duplicate_prefix_across_files_points_at_the_second(tmp_path: Path) -> None:
    other = "upstreams:\n  sms:\n    url: https://example.com\n    prefix: /twilio\n"
    assert errors(tmp_path, "{}\n", twilio=GOOD_POLICY, zz=other) == [
        "policies/zz.yaml:4:5: upstreams.sms.prefix: '/twilio' is already the prefix of upstream 'twilio'"]


def test_duplicate_upstream_name_across_files(tmp_path: Path) -> None:
    assert errors(tmp_path, "{}\n", a=GOOD_POLICY, b=GOOD_POLICY.replace("/twilio", "/t2")) == [
        "policies/b.yaml:2:3: upstreams.twilio: defined twice (first at policies/a.yaml:2)"]


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    policy = GOOD_POLICY.replace("timeout: 10s", "timeout: ten").replace("connect_timeout: 2s", "connect_timeout: 2")
    found = errors(tmp_path, "listen: nowhere\nextra: 1\n", twilio=policy)
    assert len(found) == 4
    assert [line.split(": ")[1] for line in found] == [
        "listen", "extra", "upstreams.twilio.timeout", "upstreams.twilio.connect_timeout"]


def test_routes_inherit_the_upstreams_breaker_and_override_what_they_name(tmp_path: Path) -> None:
    policy = GOOD_POLICY + (
        "    breaker: {consecutive_failures: 3, open_for: 30s}\n"
        "    routes:\n"
        "      - name: twilio_whatsapp\n"
        "        methods: [post]\n"
        "        path: /2010-04-01/Accounts/{account}/Messages.json\n"
        "        body: {To: 'whatsapp:*'}\n"
        "      - name: twilio_sms\n"
        "        methods: [POST]\n"
        "        path: /2010-04-01/Accounts/{account}/Messages.json\n"
        "        breaker: {consecutive_failures: 5}\n"
        "      - name: fetch\n"
        "        breaker: false\n"
    )
    (twilio,) = load_config(write(tmp_path, "{}\n", twilio=policy), {}).upstreams
    whatsapp, sms, fetch = twilio.routes
    assert (whatsapp.methods, whatsapp.body) == (frozenset({"POST"}), (("To", "whatsapp:*"),))
    assert (whatsapp.breaker.consecutive_failures, whatsapp.breaker.open_for) == (3, 30.0)
    assert (sms.breaker.consecutive_failures, sms.breaker.open_for) == (5, 30.0)
    assert fetch.breaker is None
    assert twilio.default_route.name == "default" and twilio.default_route.breaker.consecutive_failures == 3
    assert 500 in sms.failure_statuses and 429 not in sms.failure_statuses


def test_retry_settings_inherit_and_a_route_can_turn_them_off(tmp_path: Path) -> None:
    policy = GOOD_POLICY + (
        "    retry:\n"
        "      attempts: 3\n"
        "      backoff: {initial: 1s, multiplier: 2, max: 4s}\n"
        "      on: [connect_error, timeout, 502, 503, 504, 429]\n"
        "      not_processed: [429]\n"
        "    routes:\n"
        "      - name: twilio_sms\n"
        "        methods: [POST]\n"
        "        path: /2010-04-01/Accounts/{account}/Messages.json\n"
        "        retry: {attempts: 0}\n"
    )
    (twilio,) = load_config(write(tmp_path, "{}\n", twilio=policy), {}).upstreams
    (sms,) = twilio.routes
    default = twilio.default_route.retry
    assert (default.attempts, default.initial, default.max_backoff, default.not_processed) == (
        3, 1.0, 4.0, frozenset({429}))
    assert default.on == frozenset({"connect_error", "timeout", 502, 503, 504, 429})
    assert (sms.retry.attempts, sms.retry.not_processed) == (0, frozenset({429}))


def test_rate_limited_condition_and_body_key_are_read(tmp_path: Path) -> None:
    policy = GOOD_POLICY + (
        "    retry:\n"
        "      on: [timeout, 503, rate_limited]\n"
        "    routes:\n"
        "      - name: events\n"
        "        retry: {idempotent_when_body_has: id, on_duplicate: fetch}\n"
    )
    (google,) = load_config(write(tmp_path, "{}\n", twilio=policy), {}).upstreams
    (events,) = google.routes
    assert events.retry.on == frozenset({"timeout", 503, "rate_limited"})
    assert (events.retry.idempotent_when_body_has, events.retry.on_duplicate) == ("id", "fetch")
    assert (google.default_route.retry.idempotent_when_body_has, google.default_route.retry.on_duplicate) == (
        "", "relay")


def test_webhook_backlog_alert_age_defaults_to_five_minutes_and_names_a_bad_value(tmp_path: Path) -> None:
    slack = "alerts:\n  slack:\n    token: xoxb-1\n    channel: C1\n"
    config = load_config(write(tmp_path, slack, twilio=GOOD_POLICY), {})
    assert config.slack is not None and config.slack.webhook_backlog_age == 300.0
    config = load_config(write(tmp_path, slack + "    webhook_backlog_age: 0s\n", twilio=GOOD_POLICY), {})
    assert config.slack is not None and config.slack.webhook_backlog_age == 0.0
    assert errors(tmp_path, slack + "    webhook_backlog_age: 300\n", twilio=GOOD_POLICY) == [
        "config.yaml:5:5: alerts.slack.webhook_backlog_age: invalid duration '300' (write 250ms, 30s, 15m or 1h)"]


def test_a_ca_bundle_without_a_certificate_names_its_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "policies" / "certs").mkdir(parents=True)
    (tmp_path / "policies" / "certs" / "ca.pem").write_text("not a certificate\n")
    (problem,) = errors(tmp_path, "{}\n", twilio=GOOD_POLICY + "    ca_bundle: certs/ca.pem\n")
    assert problem.startswith("policies/twilio.yaml:7:5: upstreams.twilio.ca_bundle: cannot load policies/certs/ca.pem: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_ca_bundle_names_its_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    bundle = tmp_path / "policies" / "ca.pem"
    bundle.write_text("")
    bundle.chmod(0)
    (problem,) = errors(tmp_path, "{}\n", twilio=GOOD_POLICY + "    ca_bundle: ca.pem\n")
    assert problem == ("policies/twilio.yaml:7:5: upstreams.twilio.ca_bundle: cannot load policies/ca.pem: "
                       "[Errno 13] Permission denied")


def test_a_quoted_variable_in_a_flow_mapping_is_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint's advice works: ``{redis_url: "${REDIS_URL}"}`` reads the variable."""
    monkeypatch.chdir(tmp_path)
    url = "redis://127.0.0.1:6390/0"
    config = load_config(write(tmp_path, 'state: {backend: redis, redis_url: "${REDIS_URL}"}\n', twilio=GOOD_POLICY),
                         {"REDIS_URL": url})
    assert config.state.redis_url == url
