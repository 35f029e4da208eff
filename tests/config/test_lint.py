"""Semantic checks: one policy fixture per check, asserting the exact message (as test_load does for errors)."""

from pathlib import Path

import pytest

from proxy.config.lint import lint
from proxy.config.load import load_config, policy_trees

HEAD = """\
upstreams:
  twilio:
    url: https://api.twilio.com
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def lint_policy(tmp_path: Path, policy: str) -> list[str]:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "twilio.yaml").write_text(policy)
    (tmp_path / "config.yaml").write_text("{}\n")
    config = load_config(tmp_path / "config.yaml", {})
    return [str(p) for p in lint(config, policy_trees(config, {}))]


@pytest.mark.parametrize(("policy", "expected"), [
    pytest.param(HEAD + "    routes:\n      - {name: sms, methods: [POST], path: '/Accounts/{a}/Messages.json'}\n"
                 "      - {name: again, methods: [POST], path: '/Accounts/{account}/Messages.json'}\n",
                 "policies/twilio.yaml:6:9: upstreams.twilio.routes[1]: route 'again' can never match: route 'sms' "
                 "(routes[0]) takes every request it would", id="same-route-twice"),
    pytest.param(HEAD + "    routes:\n      - {name: accounts, path: /Accounts/**}\n"
                 "      - {name: messages, methods: [GET], path: /Accounts/*/Messages.json}\n",
                 "policies/twilio.yaml:6:9: upstreams.twilio.routes[1]: route 'messages' can never match: route "
                 "'accounts' (routes[0]) takes every request it would", id="broader-path-first"),
    pytest.param(HEAD + "    routes:\n      - {name: everything}\n      - name: sms\n        methods: [POST]\n"
                 "        body: {To: 'whatsapp:*'}\n",
                 "policies/twilio.yaml:6:9: upstreams.twilio.routes[1]: route 'sms' can never match: route "
                 "'everything' (routes[0]) takes every request it would", id="after-catch-all"),
    pytest.param(HEAD + "    rate_limits:\n      - {name: tight, key: org, limit: 10, per: 1s, burst: 5}\n"
                 "      - {name: loose, key: org, limit: 1000, per: 1m, burst: 50}\n",
                 "policies/twilio.yaml:6:9: warning: upstreams.twilio.rate_limits[1]: limit 'loose' (1000 per 1m, "
                 "burst 50) never decides: 'tight' on the same key org is at least as tight in both rate and burst "
                 "(10 per 1s, burst 5)", id="shadowed-limit"),
    pytest.param(HEAD + "    rate_limits:\n      - {name: a, key: 'header:X-Tenant', limit: 10, per: 1s}\n"
                 "    routes:\n      - name: sms\n        rate_limits:\n"
                 "          - {name: b, key: 'header:X-Tenant', limit: 10, per: 1s}\n",
                 "policies/twilio.yaml:9:13: warning: upstreams.twilio.routes[0].rate_limits[0]: limit 'b' "
                 "duplicates 'a' (same key header:X-Tenant, same rate and burst)", id="duplicate-limit"),
    pytest.param(HEAD + "    timeout: 10s\n    retry: {attempts: 2, deadline: 5s}\n",
                 "policies/twilio.yaml:5:26: warning: upstreams.twilio.retry.deadline: deadline 5s is shorter than "
                 "one attempt (the upstream's timeout 10s): a first attempt that times out leaves no time to retry",
                 id="deadline-under-timeout"),
    pytest.param(HEAD + "    timeout: 60s\n",
                 "policies/twilio.yaml:4:5: warning: upstreams.twilio.timeout: deadline 30s is shorter than one "
                 "attempt (the upstream's timeout 1m): a first attempt that times out leaves no time to retry",
                 id="timeout-over-default-deadline"),
    pytest.param(HEAD + "    routes:\n      - name: sms\n        retry: {per_try_timeout: 45s}\n",
                 "policies/twilio.yaml:6:17: warning: upstreams.twilio.routes[0].retry.per_try_timeout: deadline 30s "
                 "is shorter than one attempt (per_try_timeout 45s): a first attempt that times out leaves no time to "
                 "retry",
                 id="deadline-under-per-try-timeout"),
])
def test_each_semantic_problem_has_its_message(tmp_path: Path, policy: str, expected: str) -> None:
    assert lint_policy(tmp_path, policy) == [expected]


def test_shipped_policies_have_no_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    config = load_config("config.example.yaml", {})
    assert lint(config, policy_trees(config, {})) == []


@pytest.mark.parametrize("policy", [
    pytest.param(HEAD + "    routes:\n      - {name: wa, methods: [POST], body: {To: 'whatsapp:*'}}\n"
                 "      - {name: sms, methods: [POST]}\n", id="body-condition-first"),
    pytest.param(HEAD + "    routes:\n      - {name: get, methods: [GET]}\n      - {name: any}\n",
                 id="fewer-methods-first"),
    pytest.param(HEAD + "    routes:\n      - {name: one, path: /a/*}\n      - {name: deeper, path: /a/*/b}\n",
                 id="shorter-pattern-first"),
    pytest.param(HEAD + "    rate_limits:\n      - {name: fast, key: org, limit: 100, per: 1s, burst: 0}\n"
                 "      - {name: bursty, key: org, limit: 10, per: 1s, burst: 50}\n", id="neither-tighter"),
    pytest.param(HEAD + "    rate_limits:\n      - {name: a, key: org, limit: 10, per: 1s}\n"
                 "      - {name: b, key: ip, limit: 10, per: 1s}\n", id="different-keys"),
    pytest.param(HEAD + "    rate_limits:\n      - {name: a, key: org, limit: 10, per: 1s}\n"
                 "      - {name: b, key: org, limit: 10, per: 1s, shadow: true}\n", id="shadow-mode"),
    pytest.param(HEAD + "    rate_limits:\n      - {name: a, key: org, limit: 10, per: 1s, on_missing_key: skip}\n"
                 "      - {name: b, key: org, limit: 100, per: 1s}\n", id="tight-one-skips-missing-keys"),
    pytest.param(HEAD + "    retry: false\n    timeout: 60s\n", id="deadline-without-retries"),
])
def test_sound_policies_pass(tmp_path: Path, policy: str) -> None:
    assert lint_policy(tmp_path, policy) == []


WEBHOOK = """\
webhooks:
  w:
    path: /hooks/w
    deliver_to: http://127.0.0.1:3000/w
"""


@pytest.mark.parametrize(("config", "policy", "expected"), [
    pytest.param("{}\n", WEBHOOK + "    provider: none\n",
                 "policies/twilio.yaml:6:5: warning: webhooks.w.path: no webhooks.listen in config.yaml: this webhook "
                 "never receives a request", id="webhook-without-listener"),
    pytest.param("webhooks: {listen: 0.0.0.0:8081}\n", WEBHOOK + "    provider: none\n",
                 "policies/twilio.yaml:8:5: warning: webhooks.w.provider: provider: none on 0.0.0.0:8081, which other "
                 "hosts can reach: anyone who reaches it can queue events for the app (verify with twilio, google or "
                 "hmac)", id="unverified-on-a-public-listener"),
    pytest.param("webhooks: {listen: 0.0.0.0:8081}\n",
                 WEBHOOK + "    provider: twilio\n    twilio: {auth_token: t, public_url: https://a.example/w}\n"
                 "    mode: sync\n    delivery: {timeout: 20s}\n",
                 "policies/twilio.yaml:11:16: warning: webhooks.w.delivery.timeout: 20s in mode: sync: Twilio waits "
                 "15s for an answer and gives up before the app's reply is relayed (write less than 15s)",
                 id="sync-slower-than-twilio-waits"),
])
def test_webhook_warnings(tmp_path: Path, config: str, policy: str, expected: str) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "twilio.yaml").write_text(HEAD + policy)
    (tmp_path / "config.yaml").write_text(config)
    loaded = load_config(tmp_path / "config.yaml", {})
    assert [str(p) for p in lint(loaded, policy_trees(loaded, {}))] == [expected]


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "localhost:8081", "[::1]:8081"])
def test_an_unverified_webhook_on_loopback_is_fine(tmp_path: Path, listen: str) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "twilio.yaml").write_text(HEAD + WEBHOOK + "    provider: none\n")
    (tmp_path / "config.yaml").write_text(f"webhooks: {{listen: '{listen}'}}\n")
    loaded = load_config(tmp_path / "config.yaml", {})
    assert lint(loaded, policy_trees(loaded, {})) == []
