"""The composition root: what start() started, close() stops, in reverse, and nothing more."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from proxy.config.load import load_config
from proxy.runtime.sidecar import Sidecar
from tests.conftest import write_config


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_start_that_fails_halfway_closes_what_it_started(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sidecar = Sidecar(load_config(write_config(tmp_path, {"api": {"url": "http://127.0.0.1:1"}},
                                                   listen=f"127.0.0.1:{port}")), watch_interval=None)
        with pytest.raises(OSError):
            await sidecar.start()  # the admin listener is up when the data listener cannot bind
        assert sidecar.admin_address is not None and not bindable(sidecar.admin_address.port)
        await sidecar.close()
        assert bindable(sidecar.admin_address.port), "the admin listener was closed"
        assert not sidecar.health.ready
        await sidecar.close()  # a second close has nothing left to do


async def test_close_stops_every_part_and_a_second_close_does_nothing(tmp_path: Path) -> None:
    sidecar = Sidecar(load_config(write_config(tmp_path, {"api": {"url": "http://127.0.0.1:1"}})))
    await sidecar.start()
    assert sidecar.data_address is not None and sidecar.admin_address is not None
    await sidecar.close()
    assert bindable(sidecar.data_address.port) and bindable(sidecar.admin_address.port)
    assert all(client.session.closed for client in sidecar.dataplane.clients.values())
    await sidecar.close()
