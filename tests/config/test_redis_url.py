"""``state.redis_url``: the Sentinel and Cluster forms are accepted, a malformed one refused at start with file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.load import load_config
from proxy.config.redis_url import ClusterTarget, SentinelTarget, cluster_target, sentinel_target, without_password
from tests.config.test_load import GOOD_POLICY, errors, write


def test_a_sentinel_url_names_every_sentinel_the_master_and_the_db() -> None:
    assert sentinel_target("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/2") == \
        SentinelTarget((("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)), "mymaster", 2, None, "s3cret")
    assert sentinel_target("redis+sentinel://h:1/m").db == 0


def test_a_cluster_url_names_every_seed_node() -> None:
    assert cluster_target("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7001") == \
        ClusterTarget((("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7001)), None, "s3cret")
    assert cluster_target("redis+cluster://app:pw@h:1/0") == ClusterTarget((("h", 1),), "app", "pw")


def test_the_loader_keeps_a_sentinel_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = "redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/0"
    config = load_config(write(tmp_path, f"state:\n  backend: redis\n  redis_url: {url}\n", twilio=GOOD_POLICY), {})
    assert config.state.redis_url == url


FORM = "(write redis+sentinel://[:password@]host1:26379,host2:26379/MASTER_NAME[/db])"
CLUSTER_FORM = "(write redis+cluster://[:password@]host1:6379,host2:6379)"


@pytest.mark.parametrize(("url", "message"), [
    pytest.param("redis+sentinel:///mymaster", f"no sentinel host {FORM}", id="no-hosts"),
    pytest.param("redis+sentinel://127.0.0.1:26379", f"no master name {FORM}", id="no-master"),
    pytest.param("redis+sentinel://127.0.0.1:26379/", f"no master name {FORM}", id="empty-master"),
    pytest.param("redis+sentinel://127.0.0.1:99999/m", "invalid sentinel port '99999' in '127.0.0.1:99999' (1-65535)",
                 id="port-out-of-range"),
    pytest.param("redis+sentinel://127.0.0.1:x/m", "invalid sentinel port 'x' in '127.0.0.1:x' (1-65535)",
                 id="port-not-a-number"),
    pytest.param("redis+sentinel://a:1,/m", "empty sentinel host in '' (write host:port)", id="empty-host"),
    pytest.param("redis+sentinel://a:1/m/zero", "invalid db 'zero' (a number, e.g. /mymaster/0)", id="bad-db"),
    pytest.param("redis+cluster://", f"no cluster node {CLUSTER_FORM}", id="cluster-no-nodes"),
    pytest.param("redis+cluster://a:1/3", f"a Redis Cluster has only db 0, not '/3' {CLUSTER_FORM}",
                 id="cluster-db"),
    pytest.param("redis+cluster://a:1,b:0", "invalid cluster node port '0' in 'b:0' (1-65535)", id="cluster-port"),
    pytest.param("http://127.0.0.1:6379", "invalid Redis URL (write redis://host:port/db, rediss://..., "
                 f"unix://path, {FORM[7:-1]} or {CLUSTER_FORM[7:-1]})", id="unknown-scheme"),
])
def test_a_malformed_url_is_refused_with_its_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str,
                                                    message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert errors(tmp_path, f"state:\n  backend: redis\n  redis_url: {url}\n", twilio=GOOD_POLICY) == [
        f"config.yaml:3:3: state.redis_url: {message}"]


def test_a_password_is_hidden_in_every_form() -> None:
    assert without_password("redis+sentinel://:s3cret@a:1,b:2/m/0") == "redis+sentinel://:***@a:1,b:2/m/0"
    assert without_password("redis+sentinel://a:1,b:2/m/0") == "redis+sentinel://a:1,b:2/m/0"
    assert without_password("redis+cluster://:s3cret@a:1,b:2") == "redis+cluster://:***@a:1,b:2"
    assert without_password("rediss://app:s3cret@redis/1") == "rediss://app:***@redis/1"
