"""The pure parts of hot reload: change detection, fingerprints, what a reload may not change."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import trustme
import yaml

from proxy.config.load import load_config
from proxy.config.model import Address
from proxy.config.running import ChangeDetector, fingerprint, restart_only_changes, summarize, watched_files
from tests.conftest import write_config


def test_a_change_is_acted_on_once_two_polls_agree() -> None:
    detector = ChangeDetector("v1")
    assert not detector.observe("v1")
    assert not detector.observe("half-written")  # first sight: wait for the next poll
    assert not detector.observe("v2")  # still moving
    assert detector.observe("v2")  # settled
    detector.attempted("v2")
    assert not detector.observe("v2")  # never twice for one version, even when refused


def test_files_changed_during_a_reload_are_looked_at_again() -> None:
    detector = ChangeDetector("v1")
    detector.attempted("")
    assert not detector.observe("v3")
    assert detector.observe("v3")


def test_the_fingerprint_follows_content_a_new_policy_file_and_a_symlink_swap(tmp_path: Path) -> None:
    for generation in ("..2026_a", "..2026_b"):
        (tmp_path / generation).mkdir()
        (tmp_path / generation / "p.yaml").write_text(f"upstreams: {{}}  # {generation}\n")
    os.symlink("..2026_a", tmp_path / "..data")
    os.symlink("..data/p.yaml", tmp_path / "p.yaml")
    files = [str(tmp_path / "config.yaml"), str(tmp_path / "p.yaml")]
    (tmp_path / "config.yaml").write_text("policies: [p.yaml]\n")
    first = fingerprint(files)
    assert fingerprint(files) == first

    os.symlink("..2026_b", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the kubelet's atomic swap
    swapped = fingerprint(files)
    assert swapped != first

    (tmp_path / "q.yml").write_text("upstreams: {}\n")  # a new file in a policy directory
    assert fingerprint(files) != swapped
    (tmp_path / "q.yml").unlink()
    assert fingerprint(files) == swapped
    (tmp_path / "config.yaml").unlink()
    assert fingerprint(files) != swapped  # a missing file is a change (the reload says why)


def test_listeners_state_and_telemetry_cannot_change_by_reload(tmp_path: Path) -> None:
    old = load_config(write_config(tmp_path, {"api": {"url": "http://127.0.0.1:1"}}))
    assert restart_only_changes(old, old) == []
    new = dataclasses.replace(old, admin=dataclasses.replace(old.admin, listen=Address("127.0.0.1", 9999),
                                                             token="rotated"),
                              state=dataclasses.replace(old.state, backend="redis"))
    assert [str(p) for p in restart_only_changes(old, new)] == [
        f"{old.source}:2:3: admin.listen: cannot change while running (127.0.0.1:0 -> 127.0.0.1:9999); "
        "restart the sidecar to apply it",
        f"{old.source}: state: cannot change while running (not in the file now, so its default would apply); "
        "restart the sidecar to apply it",
    ]  # the token may rotate; state is not in the file (defaults), so no line to show, but a reason


def test_summary_names_upstreams_added_removed_and_changed(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"a": {"url": "http://127.0.0.1:1"}, "b": {"url": "http://127.0.0.1:2"}})
    old = load_config(config)
    (tmp_path / "policies" / "test.yaml").write_text(yaml.safe_dump({"upstreams": {
        "a": {"url": "http://127.0.0.1:1", "retry": False, "timeout": "3s"},
        "c": {"url": "http://127.0.0.1:3", "retry": False}}}))
    new = load_config(config)
    assert summarize(old, new) == {"added": ["c"], "removed": ["b"], "changed": ["a"]}
    assert watched_files(new) == (new.source, *new.policy_files)  # no CA bundles here


def test_the_upstreams_ca_bundles_are_watched_too(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "policies" / "ca.pem"))  # the loader reads it
    config = load_config(write_config(tmp_path, {"api": {"url": "https://127.0.0.1:1", "ca_bundle": "ca.pem"}}))
    files = watched_files(config)
    assert files[-1] == str(tmp_path / "policies" / "ca.pem")
    before = fingerprint(files)
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "policies" / "ca.pem"))  # a renewed certificate
    assert fingerprint(files) != before
