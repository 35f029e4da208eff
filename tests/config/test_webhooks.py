"""Webhooks in config: the issue's example loads with its defaults; one fixture per error, exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.load import load_config
from proxy.config.running import restart_only_changes
from proxy.config.webhooks import Backoff, Dedupe, Delivery, GoogleAuth, KeyPart, Retention, TwilioAuth
from proxy.errors import ConfigError
from tests.config.test_load import write

UPSTREAM = "upstreams:\n  twilio:\n    url: https://api.twilio.com\n"

ISSUE_EXAMPLE = """\
webhooks:
  twilio_status:
    path: /hooks/twilio/status                 # on the webhooks listener
    deliver_to: http://127.0.0.1:3000/twilio/status
    provider: twilio                           # twilio | google | hmac | none
    twilio:
      auth_token: ${TWILIO_AUTH_TOKEN}
      public_url: https://app.example.com/hooks/twilio/status   # the URL Twilio signs
    mode: queue                                # queue (answer at once) | sync (answer with the app's reply)
    dedupe: {window: 24h}                      # key: the provider's default, or a list (header:X, form:F, json:a.b)
    delivery:
      attempts: 8
      backoff: {initial: 1s, multiplier: 2, max: 5m}
      timeout: 10s
      concurrency: 4
    retention: {delivery_log: 7d}
    org: form:AccountSid                        # stored with each event, for the log and the admin API
  calendar_push:
    path: /hooks/google/calendar
    deliver_to: http://127.0.0.1:3000/google/push
    provider: google
    google: {channel_token: '${GOOGLE_CHANNEL_TOKEN}'}
"""
ENV = {"TWILIO_AUTH_TOKEN": "twilio-token", "GOOGLE_CHANNEL_TOKEN": "channel-token"}

HOOK = """\
webhooks:
  w:
    path: /hooks/w
    deliver_to: http://127.0.0.1:3000/w
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def errors(tmp_path: Path, config: str = "{}\n", **policies: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, config, **policies), ENV)
    return [str(p) for p in caught.value.problems]


def test_the_issues_example_loads_with_its_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "webhooks:\n  listen: 0.0.0.0:8081\n", api=UPSTREAM, hooks=ISSUE_EXAMPLE),
                         ENV)
    assert str(config.webhooks_listen) == "0.0.0.0:8081"
    status, push = config.webhooks
    assert (status.name, status.path, status.deliver_to, status.provider, status.mode) == (
        "twilio_status", "/hooks/twilio/status", "http://127.0.0.1:3000/twilio/status", "twilio", "queue")
    assert status.twilio == TwilioAuth("twilio-token", "https://app.example.com/hooks/twilio/status")
    assert status.delivery == Delivery(8, Backoff(1.0, 2.0, 300.0), 10.0, 4)
    assert status.retention == Retention(7 * 86400.0)
    assert status.org == KeyPart("form", "AccountSid")
    assert status.source == "policies/hooks.yaml"
    assert (push.provider, push.google, push.twilio, push.hmac) == ("google", GoogleAuth("channel-token"), None, None)


def test_defaults_a_user_would_expect(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n", api=UPSTREAM + HOOK + "    provider: none\n"), {})
    assert config.webhooks_listen is None
    (hook,) = config.webhooks
    assert (hook.mode, hook.dedupe, hook.org, hook.on_backend_error, hook.max_body) == (
        "queue", Dedupe(86400.0, ()), None, "passthrough", 2**20)
    assert hook.delivery == Delivery(8, Backoff(1.0, 2.0, 300.0), 10.0, 4)
    assert hook.retention.delivery_log == 7 * 86400.0


def test_no_webhooks_section_means_none(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n", api=UPSTREAM), {})
    assert (config.webhooks, config.webhooks_listen) == ((), None)


def test_a_policy_file_may_hold_only_webhooks(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n", api=UPSTREAM, hooks=HOOK + "    provider: none\n"), {})
    assert [h.name for h in config.webhooks] == ["w"]


def test_dedupe_keys_hmac_and_sizes_are_read(tmp_path: Path) -> None:
    policy = HOOK + """\
    provider: hmac
    hmac: {secret: s3cret, header: X-Hub-Signature-256, encoding: base64}
    dedupe: {window: 1d12h, key: ['header:X-Request-Id', 'form:Id', 'json:data.object.id']}
    org: 'json:account.id'
    max_body: 64KiB
    on_backend_error: reject
    mode: sync
"""
    (hook,) = load_config(write(tmp_path, "{}\n", api=UPSTREAM + policy), {}).webhooks
    assert hook.dedupe == Dedupe(36 * 3600.0, (KeyPart("header", "X-Request-Id"), KeyPart("form", "Id"),
                                               KeyPart("json", "data.object.id")))
    assert (hook.hmac.header, hook.hmac.encoding) == ("X-Hub-Signature-256", "base64")  # type: ignore[union-attr]
    assert (hook.org, hook.max_body, hook.on_backend_error, hook.mode) == (
        KeyPart("json", "account.id"), 65536, "reject", "sync")


def test_secrets_never_show_in_a_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n", api=UPSTREAM, hooks=ISSUE_EXAMPLE), ENV)
    assert "twilio-token" not in repr(config) and "channel-token" not in repr(config)


@pytest.mark.parametrize(("policy", "expected"), [
    pytest.param(HOOK + "    provider: none\n    pth: /x\n",
                 "policies/api.yaml:6:5: webhooks.w.pth: unknown key", id="unknown-key"),
    pytest.param(HOOK, "policies/api.yaml:2:3: webhooks.w.provider: is required", id="no-provider"),
    pytest.param(HOOK + "    provider: github\n",
                 "policies/api.yaml:5:5: webhooks.w.provider: must be one of twilio, google, hmac, none, not 'github'",
                 id="bad-provider"),
    pytest.param(HOOK + "    provider: twilio\n",
                 "policies/api.yaml:2:3: webhooks.w.twilio: is required for provider: twilio (it holds the auth_token)",
                 id="twilio-without-secret"),
    pytest.param(HOOK + "    provider: google\n",
                 "policies/api.yaml:2:3: webhooks.w.google: is required for provider: google (it holds the "
                 "channel_token)", id="google-without-secret"),
    pytest.param(HOOK + "    provider: hmac\n",
                 "policies/api.yaml:2:3: webhooks.w.hmac: is required for provider: hmac (it holds the secret)",
                 id="hmac-without-secret"),
    pytest.param(HOOK + "    provider: google\n    google: {channel_token: '${TOKEN:-}'}\n",
                 "policies/api.yaml:6:14: webhooks.w.google.channel_token: is empty (is its environment variable "
                 "set?)", id="empty-secret"),
    pytest.param(HOOK + "    provider: twilio\n    twilio: {auth_token: t}\n",
                 "policies/api.yaml:6:5: webhooks.w.twilio.public_url: is required", id="twilio-without-public-url"),
    pytest.param(HOOK + "    provider: hmac\n    hmac: {secret: s}\n",
                 "policies/api.yaml:6:5: webhooks.w.hmac.header: is required", id="hmac-without-header"),
    pytest.param(HOOK + "    provider: hmac\n    hmac: {secret: s, header: X-Sig, encoding: base32}\n",
                 "policies/api.yaml:6:38: webhooks.w.hmac.encoding: must be one of hex, base64, not 'base32'",
                 id="hmac-bad-encoding"),
    pytest.param(HOOK + "    provider: none\n    google: {channel_token: t}\n",
                 "policies/api.yaml:6:5: webhooks.w.google: only applies with provider: google",
                 id="another-providers-section"),
    pytest.param(HOOK.replace("http://127.0.0.1:3000/w", "ftp://127.0.0.1/w") + "    provider: none\n",
                 "policies/api.yaml:4:5: webhooks.w.deliver_to: invalid url 'ftp://127.0.0.1/w' "
                 "(write https://host[:port][/base/path])", id="deliver-to-not-http"),
    pytest.param(HOOK.replace("3000/w\n", "3000/w?a=1\n") + "    provider: none\n",
                 "policies/api.yaml:4:5: webhooks.w.deliver_to: invalid url 'http://127.0.0.1:3000/w?a=1': no query, "
                 "fragment or credentials allowed", id="deliver-to-with-query"),
    pytest.param(HOOK.replace("path: /hooks/w", "path: hooks/w") + "    provider: none\n",
                 "policies/api.yaml:3:5: webhooks.w.path: invalid path 'hooks/w' (write an exact path such as "
                 "/hooks/twilio/status)", id="bad-path"),
    pytest.param(HOOK + "    provider: none\n    mode: async\n",
                 "policies/api.yaml:6:5: webhooks.w.mode: must be one of queue, sync, not 'async'", id="bad-mode"),
    pytest.param(HOOK + "    provider: none\n    dedupe: {key: ['body:Sid']}\n",
                 "policies/api.yaml:6:20: webhooks.w.dedupe.key[0]: invalid key 'body:Sid' (write header:X-Name, "
                 "form:Field or json:a.b)", id="bad-dedupe-key"),
    pytest.param(HOOK + "    provider: none\n    dedupe: {window: 0s}\n",
                 "policies/api.yaml:6:14: webhooks.w.dedupe.window: must be greater than zero, not '0s'",
                 id="zero-window"),
    pytest.param(HOOK + "    provider: none\n    org: 'json:a..b'\n",
                 "policies/api.yaml:6:5: webhooks.w.org: invalid key 'json:a..b': json: takes a dotted path such as "
                 "json:data.id", id="bad-org"),
    pytest.param(HOOK + "    provider: none\n    delivery: {attempts: 0}\n",
                 "policies/api.yaml:6:16: webhooks.w.delivery.attempts: must be a whole number >= 1, not '0'",
                 id="no-attempts"),
    pytest.param(HOOK + "    provider: none\n    delivery: {backoff: {initial: 10s, max: 1s}}\n",
                 "policies/api.yaml:6:40: webhooks.w.delivery.backoff.max: must be at least initial (10s)",
                 id="backoff-max-under-initial"),
    pytest.param(HOOK + "    provider: none\n    retention: {delivery_log: 7 days}\n",
                 "policies/api.yaml:6:17: webhooks.w.retention.delivery_log: invalid duration '7 days' (write 250ms, "
                 "30s, 15m or 1h)", id="bad-retention"),
    pytest.param(HOOK + "    provider: none\n    on_backend_error: retry\n",
                 "policies/api.yaml:6:5: webhooks.w.on_backend_error: must be one of passthrough, reject, not 'retry'",
                 id="bad-on-backend-error"),
    pytest.param(HOOK + "    provider: none\n    max_body: 0\n",
                 "policies/api.yaml:6:5: webhooks.w.max_body: must be greater than zero, not '0'", id="zero-max-body"),
    pytest.param("webhooks:\n  'a b':\n    path: /x\n    deliver_to: http://127.0.0.1/x\n    provider: none\n",
                 "policies/api.yaml:2:3: webhooks.a b: invalid webhook name 'a b' (letters, digits, '-', '_', '.'; "
                 "at most 64)", id="bad-name"),
    pytest.param("webhooks: [a]\n", "policies/api.yaml:1:1: webhooks: must be a mapping, not a list",
                 id="not-a-mapping"),
])
def test_each_webhook_error_has_one_exact_message(tmp_path: Path, policy: str, expected: str) -> None:
    assert errors(tmp_path, "{}\n", twilio=UPSTREAM, api=policy) == [expected]


def test_a_path_used_twice_across_files_points_at_the_second(tmp_path: Path) -> None:
    second = HOOK.replace("  w:", "  other:") + "    provider: none\n"
    assert errors(tmp_path, "{}\n", twilio=UPSTREAM, a=HOOK + "    provider: none\n", b=second) == [
        "policies/b.yaml:3:5: webhooks.other.path: '/hooks/w' is already the path of webhook 'w'"]


def test_a_name_used_twice_across_files(tmp_path: Path) -> None:
    second = HOOK.replace("/hooks/w", "/hooks/w2") + "    provider: none\n"
    assert errors(tmp_path, "{}\n", twilio=UPSTREAM, a=HOOK + "    provider: none\n", b=second) == [
        "policies/b.yaml:2:3: webhooks.w: defined twice (first at policies/a.yaml:2)"]


@pytest.mark.parametrize(("config", "expected"), [
    pytest.param("webhooks:\n  listen: 8081\n",
                 "config.yaml:2:3: webhooks.listen: invalid address '8081' (write host:port, e.g. 127.0.0.1:8080)",
                 id="bad-listen"),
    pytest.param("webhooks:\n  listne: 0.0.0.0:8081\n", "config.yaml:2:3: webhooks.listne: unknown key",
                 id="unknown-key"),
    pytest.param("listen: 127.0.0.1:8080\nwebhooks:\n  listen: 127.0.0.1:8080\n",
                 "config.yaml:3:3: webhooks.listen: must differ from listen and admin.listen", id="same-as-listen"),
    pytest.param("webhooks:\n  listen: 127.0.0.1:9901\n",
                 "config.yaml:2:3: webhooks.listen: must differ from listen and admin.listen", id="same-as-admin"),
])
def test_each_listener_error_has_one_exact_message(tmp_path: Path, config: str, expected: str) -> None:
    assert errors(tmp_path, config, twilio=UPSTREAM) == [expected]


def test_the_listener_is_restart_only_and_webhook_definitions_are_not(tmp_path: Path) -> None:
    old = load_config(write(tmp_path, "webhooks:\n  listen: 127.0.0.1:8081\n", api=UPSTREAM,
                            hooks=HOOK + "    provider: none\n"), {})
    changed_hook = load_config(write(tmp_path, "webhooks:\n  listen: 127.0.0.1:8081\n", api=UPSTREAM,
                                     hooks=HOOK + "    provider: none\n    mode: sync\n"), {})
    assert restart_only_changes(old, changed_hook) == []
    moved = load_config(write(tmp_path, "webhooks:\n  listen: 127.0.0.1:8082\n", api=UPSTREAM,
                              hooks=HOOK + "    provider: none\n"), {})
    assert [str(p) for p in restart_only_changes(old, moved)] == [
        "config.yaml:2:3: webhooks.listen: cannot change while running (127.0.0.1:8081 -> 127.0.0.1:8082); "
        "restart the sidecar to apply it"]
