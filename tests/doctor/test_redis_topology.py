"""``doctor`` says which Redis it found: one server, a master behind N sentinels, or a cluster of N
masters with its slot coverage, and FAILs when what answers cannot serve the fleet (an incomplete
cluster, a seed outside it, a replica, nothing answering). Real servers on loopback: a 3-master
cluster with replicas (tests/cluster_servers.py), a master, replica and 3 sentinels
(tests/sentinel_servers.py); the CLI runs as a subprocess for the exit status.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config.model import StateSettings
from proxy.doctor.cluster_checks import check_cluster, spans, uncovered
from proxy.doctor.redis_checks import check_redis
from proxy.doctor.report import Result
from tests.cluster_servers import ClusterSet, cluster_port
from tests.conftest import free_port
from tests.doctor.conftest import World, doctor, write
from tests.redis_server import RedisServer
from tests.sentinel_servers import SentinelSet, running

SCRIPTS = "admit, force, ratelimit, ratelimit_hold, ratelimit_refund, record"


@pytest.fixture
def cluster(redis_cluster: ClusterSet) -> ClusterSet:
    """The session's cluster (tests/conftest.py): 3 masters, 3 replicas; nothing here changes it."""
    return redis_cluster


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with running(tmp_path_factory.mktemp("sentinel")) as servers:
        yield servers


@pytest.fixture
def unserved(tmp_path: Path) -> Iterator[ClusterSet]:
    """Three masters (no replicas) that forgot who serves slots 6000-6099: every node says cluster_state fail."""
    servers = ClusterSet(tmp_path / "broken", replicas=False)
    try:
        servers.start()
        for node in servers.nodes:
            with node.client() as client:
                client.execute_command("CLUSTER DELSLOTS", *range(6000, 6100))
        deadline = time.monotonic() + 15
        while not all(_state(node) == "fail" for node in servers.nodes):
            assert time.monotonic() < deadline, "the cluster did not notice its unserved slots"
            time.sleep(0.05)
        yield servers
    finally:
        servers.stop()


def _state(node: RedisServer) -> str:
    with node.client() as client:
        return str(client.cluster("INFO")["cluster_state"])


def _flags(seen_by: RedisServer, node: RedisServer) -> list[str]:
    """``node``'s flags in ``seen_by``'s CLUSTER NODES (``fail`` once the masters agree it is down)."""
    with seen_by.client() as client:
        return str(dict(client.execute_command("CLUSTER NODES"))[f"127.0.0.1:{node.port}"]["flags"]).split(",")


def settings(url: str) -> StateSettings:
    return StateSettings(backend="redis", redis_url=url, redis_timeout=0.05, key_prefix="rp:", required=False)


def by_name(rows: list[Result]) -> dict[str, Result]:
    return {row.check: row for row in rows}


def test_slot_arithmetic() -> None:
    assert uncovered([(0, 5460), (5461, 10921), (10922, 16383)]) == []
    assert uncovered([(10922, 16383), (0, 5999), (6100, 10921)]) == [(6000, 6099)]
    assert uncovered([(1, 5), (3, 9)]) == [(0, 0), (10, 16383)]
    assert uncovered([]) == [(0, 16383)]
    assert spans([(0, 0), (5, 9)]) == "0, 5-9"
    assert spans([(i, i) for i in range(6)], most=4) == "0, 1, 2, 3 and 2 more"


async def test_a_whole_cluster_passes_with_its_masters_replicas_and_every_slot(cluster: ClusterSet) -> None:
    rows = await check_cluster(settings(cluster.url(seeds=2)))
    assert [row.check for row in rows] == ["cluster", "redis", "lua scripts"]
    found = by_name(rows)
    assert found["cluster"] == Result("cluster", "PASS", "3 masters, 3 replicas, 16384/16384 slots, cluster_state ok; "
                                                         "2 of 2 seeds answer")
    assert found["redis"].status in ("PASS", "WARN") and found["redis"].detail.startswith("3 masters answer (Redis 6.")
    assert found["lua scripts"] == Result("lua scripts", "PASS", f"6 loaded on each of 3 masters: {SCRIPTS}")
    for master in cluster.master_nodes():  # on every master: EVALSHA runs where its key's slot is
        with master.client() as client:
            assert client.script_exists(*(sha for sha in _shas())) == [True] * 5


def _shas() -> list[str]:
    from proxy.state.redis import breaker_scripts, limits

    return [*breaker_scripts.SCRIPTS.shas.values(), *limits.SCRIPTS.shas.values()]


async def test_a_seed_that_does_not_answer_warns_while_the_cluster_is_whole(cluster: ClusterSet) -> None:
    silent = cluster_port()
    rows = by_name(await check_cluster(settings(f"{cluster.url(seeds=1)},127.0.0.1:{silent}")))
    assert rows["cluster"].status == "WARN"
    assert rows["cluster"].detail.startswith("3 masters, 3 replicas, 16384/16384 slots, cluster_state ok; "
                                             f"1 of 2 seeds answer; not answering: 127.0.0.1:{silent} (Error 111")
    assert rows["lua scripts"].status == "PASS"


async def test_a_seed_outside_the_cluster_fails(cluster: ClusterSet, redis_server: RedisServer,
                                                tmp_path: Path) -> None:
    lone = RedisServer(tmp_path, port=cluster_port())
    lone.extra = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{lone.port}.conf")
    lone.start()
    try:
        url = f"{cluster.url(seeds=1)},127.0.0.1:{redis_server.port},127.0.0.1:{lone.port}"
        rows = by_name(await check_cluster(settings(url)))
    finally:
        lone.stop()
    assert rows["cluster"].status == "FAIL"
    detail = rows["cluster"].detail
    assert f"127.0.0.1:{redis_server.port} is not a cluster node (cluster support disabled" in detail
    seed = cluster.nodes[0].port
    assert f"127.0.0.1:{lone.port} is not in the cluster 127.0.0.1:{seed} belongs to (it knows 1 node)" in detail
    assert detail.endswith("3 masters, 3 replicas, 16384/16384 slots, cluster_state ok; 2 of 3 seeds answer"), detail


async def test_a_failed_replica_warns_while_every_slot_is_served_and_the_password_stays_out(
        tmp_path: Path) -> None:
    servers = ClusterSet(tmp_path / "cluster", password="s3cret")
    try:
        servers.start()
        replica = servers.replica_of(servers.nodes[0])
        replica.kill()
        deadline = time.monotonic() + 20  # the masters agree on "fail" within a few node timeouts (1 s)
        while "fail" not in _flags(servers.nodes[0], replica):
            assert time.monotonic() < deadline, "the cluster never marked the killed replica failed"
            time.sleep(0.1)
        rows = by_name(await check_cluster(settings(servers.url(password="s3cret", seeds=2))))
    finally:
        servers.stop()
    assert rows["cluster"] == Result("cluster", "WARN", "3 masters, 2 replicas, 16384/16384 slots, cluster_state ok; "
                                                        f"2 of 2 seeds answer; failing: 127.0.0.1:{replica.port}")
    assert rows["lua scripts"].status == "PASS"  # AUTH with the URL's password on every master
    assert all("s3cret" not in row.detail for row in rows.values())


async def test_no_seed_answering_fails_and_never_shows_the_password() -> None:
    port = cluster_port()
    rows = await check_cluster(settings(f"redis+cluster://:s3cret@127.0.0.1:{port}"))
    assert [(row.check, row.status) for row in rows] == [("cluster", "FAIL"), ("redis", "SKIP"),
                                                         ("lua scripts", "SKIP")]
    assert rows[0].detail.startswith(f"no seed answers: 127.0.0.1:{port} (Error 111")
    assert all("s3cret" not in row.detail for row in rows)


async def test_a_cluster_with_unserved_slots_fails_naming_them_through_the_cli(
        unserved: ClusterSet, tmp_path: Path, world: World) -> None:
    write(tmp_path, world, unserved.url(seeds=3))
    status, rows, output = await doctor(tmp_path)
    assert status == 1, output
    assert list(rows)[:4] == ["config", "cluster", "redis", "lua scripts"]
    assert rows["cluster"][0] == "FAIL"
    ports = ", ".join(f"127.0.0.1:{node.port}" for node in unserved.nodes)
    assert rows["cluster"][1] == (f"slots 6000-6099 not served by any master; cluster_state fail on {ports}; "
                                  "3 masters, 0 replicas, 16284/16384 slots, cluster_state fail; 3 of 3 seeds answer")
    # The masters themselves answer (WARN: a PING over 10 ms, on a busy machine).
    assert rows["redis"][0] in ("PASS", "WARN") and rows["lua scripts"][0] == "PASS", output


async def test_a_whole_cluster_through_the_cli_exits_0(cluster: ClusterSet, tmp_path: Path, world: World) -> None:
    write(tmp_path, world, cluster.url(seeds=3))
    status, rows, output = await doctor(tmp_path)
    assert status == 0, output
    assert rows["cluster"] == ("PASS", "3 masters, 3 replicas, 16384/16384 slots, cluster_state ok; "
                                       "3 of 3 seeds answer")


async def test_sentinel_rows_count_the_sentinels_and_name_the_master(sentinels: SentinelSet) -> None:
    rows = await check_redis(settings(sentinels.url()))
    assert [row.check for row in rows] == ["sentinel", "redis", "lua scripts"]
    master = sentinels.master_port()
    assert rows[0] == Result("sentinel", "PASS", f"3 of 3 sentinels answer, master mymaster at 127.0.0.1:{master}")
    assert rows[1].status in ("PASS", "WARN")  # WARN: a PING over 10 ms, on a busy machine
    assert rows[1].detail.startswith(f"master at 127.0.0.1:{master} (Redis 6.")
    assert ", master): PING " in rows[1].detail
    assert rows[2] == Result("lua scripts", "PASS", f"6 loaded: {SCRIPTS}")


async def test_a_silent_sentinel_warns(sentinels: SentinelSet, tmp_path: Path, world: World) -> None:
    silent = free_port()
    url = sentinels.url().replace("/mymaster", f",127.0.0.1:{silent}/mymaster")
    write(tmp_path, world, url)
    status, rows, output = await doctor(tmp_path)
    assert status == 0, output
    assert rows["sentinel"][0] == "WARN"
    assert rows["sentinel"][1].startswith(f"3 of 4 sentinels answer, master mymaster at 127.0.0.1:"
                                          f"{sentinels.master_port()}; not answering: 127.0.0.1:{silent} (Error 111")


async def test_no_sentinel_answering_fails_and_never_shows_the_password() -> None:
    port = free_port()
    rows = await check_redis(settings(f"redis+sentinel://:s3cret@127.0.0.1:{port}/mymaster/0"))
    assert [(row.check, row.status) for row in rows] == [("sentinel", "FAIL"), ("redis", "SKIP"),
                                                         ("lua scripts", "SKIP")]
    assert rows[0].detail.startswith(f"0 of 1 sentinels answer, master mymaster unknown: 127.0.0.1:{port} (Error 111")
    assert all("s3cret" not in row.detail for row in rows)


async def test_an_unknown_master_name_fails(sentinels: SentinelSet) -> None:
    rows = await check_redis(settings(sentinels.url().replace("/mymaster", "/othermaster")))
    assert rows[0] == Result("sentinel", "FAIL", "3 of 3 sentinels answer; none knows a master named othermaster")


async def test_a_single_server_says_where_which_version_and_role(redis_url: str, redis_server: RedisServer) -> None:
    rows = await check_redis(settings(redis_url))
    assert [row.check for row in rows] == ["redis", "lua scripts"]
    assert rows[0].detail.startswith(f"single server at 127.0.0.1:{redis_server.port} (Redis 6.")
    assert ", master): PING " in rows[0].detail


async def test_a_replica_or_a_cluster_node_behind_redis_url_fails(redis_server: RedisServer, cluster: ClusterSet,
                                                                   tmp_path: Path) -> None:
    replica = RedisServer(tmp_path, extra=("--replicaof", "127.0.0.1", str(redis_server.port)))
    replica.start()
    try:
        rows = await check_redis(settings(replica.url))
    finally:
        replica.stop()
    assert rows[0].status == "FAIL" and rows[0].detail.startswith(f"single server at 127.0.0.1:{replica.port}")
    assert rows[0].detail.endswith(", slave): a replica (read-only, the scripts' writes fail: point "
                                   "state.redis_url at the master)")
    assert rows[1] == Result("lua scripts", "SKIP", "not a master")
    node = cluster.nodes[0].port
    rows = await check_redis(settings(f"redis://127.0.0.1:{node}/0"))
    assert rows[0].status == "FAIL"
    assert rows[0].detail.endswith(f"is a Redis Cluster node: write redis+cluster://127.0.0.1:{node}[,host:port...]")


def test_the_cli_rows_follow_the_url_even_when_skipped(tmp_path: Path) -> None:
    from proxy.config.load import load_config
    from proxy.doctor import plan

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "api.yaml").write_text("upstreams:\n  api:\n    url: http://127.0.0.1:1\n")
    for url, names in (("redis+cluster://127.0.0.1:7000", ("cluster", "redis", "lua scripts")),
                       ("redis+sentinel://127.0.0.1:26379/m", ("sentinel", "redis", "lua scripts")),
                       ("redis://127.0.0.1:6379/0", ("redis", "lua scripts"))):
        (tmp_path / "config.yaml").write_text(f"state:\n  backend: redis\n  redis_url: '{url}'\n")
        config = load_config(tmp_path / "config.yaml", {})
        assert plan(config, skip_network=True, send_test_alert=False)[0].names == names
        assert plan(config, skip_network=False, send_test_alert=False)[0].names == names

