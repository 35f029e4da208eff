"""Shared fixtures: config files written to a temp dir, an in-process sidecar on free ports,
and helpers for subprocess sidecars. Upstreams are real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest
import yaml

from proxy.config.load import load_config
from proxy.observe.access import AccessLog
from proxy.runtime.sidecar import Sidecar


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, upstreams: dict[str, dict[str, Any]], **settings: Any) -> Path:
    """A config file plus ``policies/test.yaml`` holding ``upstreams``; returns the config path.

    Upstreams get ``retry: false`` unless the test says otherwise, so that a test about something
    else does not wait through production backoffs."""
    upstreams = {name: {"retry": False, **settings_} for name, settings_ in upstreams.items()}
    (directory / "policies").mkdir(exist_ok=True)
    (directory / "policies" / "test.yaml").write_text(yaml.safe_dump({"upstreams": upstreams}))
    config = {"listen": "127.0.0.1:0", "admin": {"listen": "127.0.0.1:0"}, "policies": ["policies/"],
              "log": {"level": "warning", "access": False}}
    config.update(settings)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


StartSidecar = Callable[..., Awaitable[Sidecar]]


@pytest.fixture
async def start_sidecar(tmp_path: Path) -> AsyncIterator[StartSidecar]:
    """Start in-process sidecars for ``upstreams``; all are closed after the test."""
    started: list[Sidecar] = []

    async def start(upstreams: dict[str, dict[str, Any]], access_log: AccessLog | None = None,
                    **settings: Any) -> Sidecar:
        sidecar = Sidecar(load_config(write_config(tmp_path, upstreams, **settings)), access_log=access_log)
        await sidecar.start()
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        await sidecar.close()


def base_url(sidecar: Sidecar) -> str:
    assert sidecar.data_address is not None
    return f"http://127.0.0.1:{sidecar.data_address.port}"


def admin_url(sidecar: Sidecar) -> str:
    assert sidecar.admin_address is not None
    return f"http://127.0.0.1:{sidecar.admin_address.port}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that changes nothing it is given: no decompression, no redirects, no cookies kept."""
    async with aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


class ScriptedUpstream:
    """A loopback upstream that answers with ``status`` after ``delay`` and counts its hits."""

    def __init__(self) -> None:
        self.status = 200
        self.script: list[int] = []
        """Statuses for the next hits, first first; ``status`` once it runs out."""
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        self.hits = 0
        self.bodies: list[str] = []
        self.times: list[float] = []

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        self.hits += 1
        self.times.append(asyncio.get_running_loop().time())
        self.bodies.append((await request.read()).decode())
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.script.pop(0) if self.script else self.status
        return aiohttp.web.json_response({"status": status}, status=status, headers=self.headers)


@pytest.fixture
async def scripted(aiohttp_server) -> tuple[ScriptedUpstream, str]:  # type: ignore[no-untyped-def]
    """A ScriptedUpstream on a free port, and its URL."""
    upstream = ScriptedUpstream()
    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    server = await aiohttp_server(app)
    return upstream, f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One ``tests.redis_server.RedisServer`` for the session, on a free 127.0.0.1 port (never 6379)."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """A private redis-server for this test alone, which it may kill, pause or restart."""
    from tests.redis_server import RedisServer

    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.resume()
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One ``tests.cluster_servers.ClusterSet`` (3 masters, 3 replicas) for the session; a test that
    kills a node starts a cluster of its own."""
    from tests.cluster_servers import ClusterSet

    cluster = ClusterSet(tmp_path_factory.mktemp("cluster"))
    request.addfinalizer(cluster.stop)
    cluster.start()
    return cluster


@pytest.fixture
def cluster_url(redis_cluster: Any) -> str:
    """``redis+cluster://`` for the session's cluster, every master emptied for this test."""
    for node in redis_cluster.master_nodes():
        with node.client() as client:
            client.flushall()
    return str(redis_cluster.url())


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The session's Redis, emptied for this test."""
    with redis_server.client() as client:
        client.flushall()
    return str(redis_server.url)
