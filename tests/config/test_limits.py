"""``rate_limits`` in policy files: what users write, what it resolves to, one case per error."""

from pathlib import Path

import pytest

from proxy.config.load import load_config
from proxy.config.policy_values import BackendError, KeyKind, MissingKey, Rate
from proxy.errors import ConfigError

CONFIG = "policies: [policies/]\n"

ISSUE_EXAMPLE = """\
upstreams:
  twilio:
    url: https://api.twilio.com
    rate_limits:
      - {name: per-org-hourly, key: org, limit: 1000, per: 1h}
      - {name: per-ip, key: ip, limit: 100, per: 15m, shadow: true}
      - {name: account, key: global, limit: 100, per: 1s, burst: 20}
      - {name: per-account, key: basic_auth_user, limit: 5000, per: 1h}
      - {name: per-tenant, key: "header:X-Tenant", limit: 10, per: 1s, on_backend_error: deny}
    routes:
      - name: events
        path: /calendars/{calendarId}/events
        rate_limits:
          - {name: per-calendar, key: "path:calendarId", limit: 600, per: 1m}
          - name: per-org-events
            key: org
            limit: 10
            per: 1m
            on_missing_key: reject
            local_share: 25%
            overrides: {acme: 5000, "12345": {limit: 20, per: 1s, burst: 0}}
"""


def load(tmp_path: Path, policy: str):  # type: ignore[no-untyped-def]
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "p.yaml").write_text(policy)
    (tmp_path / "config.yaml").write_text(CONFIG)
    return load_config(tmp_path / "config.yaml", {})


def errors(tmp_path: Path, policy: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, policy)
    return [str(p) for p in caught.value.problems]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_the_issue_example_resolves_with_defaults(tmp_path: Path) -> None:
    (twilio,) = load(tmp_path, ISSUE_EXAMPLE).upstreams
    shared = twilio.default_route.rate_limits
    assert [limit.name for limit in shared] == ["per-org-hourly", "per-ip", "account", "per-account", "per-tenant"]
    org, ip, account, _, tenant = shared
    assert (org.kind, org.rate) == (KeyKind.ORG, Rate(1000, 3600.0, 999))
    assert (ip.rate, ip.shadow) == (Rate(100, 900.0, 99), True)
    assert account.rate == Rate(100, 1.0, 20)
    assert (tenant.kind, tenant.key_name, tenant.on_backend_error) == (KeyKind.HEADER, "X-Tenant", BackendError.DENY)
    assert org.on_missing_key == MissingKey.ANONYMOUS and org.honor_upstream_retry_after

    (events,) = twilio.routes
    assert [limit.name for limit in events.rate_limits][-2:] == ["per-calendar", "per-org-events"]
    per_org = events.rate_limits[-1]
    assert per_org.rate_for("acme") == Rate(5000, 60.0, 4999)
    assert per_org.rate_for("12345") == Rate(20, 1.0, 0)
    assert per_org.rate_for("other") == Rate(10, 60.0, 9)
    assert (per_org.local_share, per_org.on_missing_key) == (0.25, MissingKey.REJECT)


def policy(limit: str, route: str = "") -> str:
    return f"upstreams:\n  g:\n    url: https://example.com\n    rate_limits:\n      - {limit}\n{route}"


@pytest.mark.parametrize("limit, message", [
    ("{name: a, key: org, limit: 0, per: 1s}",
     "policies/p.yaml:5:29: upstreams.g.rate_limits[0].limit: must be a whole number >= 1, not '0'"),
    ("{name: a, key: org, limit: 5, per: 60}",
     "policies/p.yaml:5:39: upstreams.g.rate_limits[0].per: invalid duration '60' (write 250ms, 30s, 15m or 1h)"),
    ("{name: a, key: user, limit: 5, per: 1s}",
     "policies/p.yaml:5:19: upstreams.g.rate_limits[0].key: invalid key 'user' (one of org, ip, global, basic_auth_user, "
     "header:<Name> or path:<capture>)"),
    ("{name: a, key: 'header:X Tenant', limit: 5, per: 1s}",
     "policies/p.yaml:5:19: upstreams.g.rate_limits[0].key: invalid header name 'X Tenant'"),
    ("{name: a, key: 'path:calendarId', limit: 5, per: 1s}",
     "policies/p.yaml:5:19: upstreams.g.rate_limits[0].key: no {calendarId} capture in the path of any route of this upstream"),
    ("{name: a, key: org, limit: 5, per: 1s, on_backend_error: maybe}",
     "policies/p.yaml:5:48: upstreams.g.rate_limits[0].on_backend_error: must be one of allow, deny, not 'maybe'"),
    ("{name: a, key: org, limit: 5, per: 1s, on_backend_error: deny, local_share: 0.5}",
     "policies/p.yaml:5:72: upstreams.g.rate_limits[0].local_share: only applies with on_backend_error: allow "
     "(deny rejects every call while the backend is down)"),
    ("{name: a, key: org, limit: 5, per: 1s, on_missing_key: ignore}",
     "policies/p.yaml:5:48: upstreams.g.rate_limits[0].on_missing_key: must be one of reject, anonymous, skip, not 'ignore'"),
    ("{name: a, key: org, limit: 5, per: 1s, overrides: {acme: lots}}",
     "policies/p.yaml:5:60: upstreams.g.rate_limits[0].overrides.acme: must be a whole number >= 1, not 'lots'"),
    ("{name: a, key: org, limit: 5, per: 1s, rate: 7}",
     "policies/p.yaml:5:48: upstreams.g.rate_limits[0].rate: unknown key"),
    ("{key: org, limit: 5, per: 1s}",
     "policies/p.yaml:5:9: upstreams.g.rate_limits[0].name: is required"),
])
def test_each_mistake_is_named_with_file_line_and_field(tmp_path: Path, limit: str, message: str) -> None:
    assert errors(tmp_path, policy(limit)) == [message]


def test_a_limit_name_is_unique_per_upstream_routes_included(tmp_path: Path) -> None:
    route = ("    routes:\n      - name: r\n        rate_limits:\n"
             "          - {name: a, key: global, limit: 1, per: 1s}\n")
    assert errors(tmp_path, policy("{name: a, key: org, limit: 5, per: 1s}", route)) == [
        "policies/p.yaml:5:10: upstreams.g.rate_limits[0].name: 'a' is already the name of a limit of this upstream"]


def test_a_path_key_on_a_route_must_name_one_of_its_captures(tmp_path: Path) -> None:
    route = ("    routes:\n      - name: r\n        path: /calendars/{calendarId}\n        rate_limits:\n"
             "          - {name: b, key: 'path:calendar', limit: 1, per: 1s}\n")
    assert errors(tmp_path, policy("{name: a, key: org, limit: 5, per: 1s}", route)) == [
        "policies/p.yaml:10:23: upstreams.g.routes[0].rate_limits[0].key: no {calendar} capture in this route's path"]


def test_the_redis_timeout_is_milliseconds_never_seconds(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "p.yaml").write_text(policy("{name: a, key: org, limit: 5, per: 1s}"))
    (tmp_path / "config.yaml").write_text(CONFIG + "state: {backend: redis, redis_timeout: 2s}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "config.yaml", {})
    assert [str(p) for p in caught.value.problems] == [
        "config.yaml:2:25: state.redis_timeout: must be more than 0 and at most 1s (every request may wait this "
        "long once when Redis hangs), not '2s'"]
