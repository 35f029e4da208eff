"""Hot reload decisions: what changed on disk, whether a new config may replace the running one,
and what to report about it. No asyncio here: the server polls and swaps (:mod:`proxy.runtime.sidecar`).

**Watching.** Every poll hashes the *content* of the config file, of every policy file the running
config loaded, and the names of the ``*.yaml``/``*.yml`` files in their directories (so a file
added to or removed from a policy directory counts). Content rather than mtime/inode because a
Kubernetes ConfigMap update swaps the ``..data`` symlink to a new timestamped directory: reading
through the symlinks sees the new files whatever their stat says, and an editor that rewrites a
file within the same mtime tick is still seen. The files are small; hashing them twice a second
costs microseconds, and needs no dependency (an inotify watcher such as watchfiles would have to
watch the directories to see a ConfigMap swap, and misses changes on some network volumes).

A change is acted on once two polls in a row agree on it (:class:`ChangeDetector`), so a file
caught half-written by a non-atomic editor is not reported as a broken config.

**Deciding.** A new config that loads is applied whole, except when it changes a setting that
only a restart can apply (:func:`restart_only_changes`): then it is refused whole, like an
invalid one, so that what runs is always exactly one version of the files, never a mix.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from proxy.config.load import POLICY_SUFFIXES
from proxy.config.model import Config
from proxy.config.yamltree import Mark, parse_yaml
from proxy.errors import Problem

RESTART_ONLY = ("listen", "admin.listen", "state", "shutdown_grace", "errors.sentry", "alerts.slack",
                "webhooks.listen")
"""Settings bound when the process starts: listeners, the state backend's connections, the drain
timer, the Sentry SDK (process-global) and the Slack client with its damping state."""


def watched_files(config: Config) -> tuple[str, ...]:
    """The config file, then every policy file it loaded, then the upstreams' CA bundles."""
    bundles = sorted({u.ca_bundle for u in config.upstreams if u.ca_bundle})
    return (config.source, *config.policy_files, *bundles)


def fingerprint(files: Iterable[str]) -> str:
    """A short hash of the files' content and of the policy file names in their directories.

    A missing or unreadable file hashes as such (it is a change, and the reload reports why)."""
    digest = hashlib.sha256()
    paths = list(dict.fromkeys(files))
    for path in paths:
        digest.update(path.encode() + b"\0")
        try:
            digest.update(Path(path).read_bytes())
        except OSError as error:
            digest.update(f"\0unreadable: {error.errno}".encode())
        digest.update(b"\0")
    for directory in sorted({str(Path(p).parent) for p in paths[1:]}):
        try:
            names = sorted(p.name for p in Path(directory).iterdir() if p.suffix in POLICY_SUFFIXES)
        except OSError:
            names = ["\0missing"]
        digest.update(f"{directory}:{','.join(names)}\0".encode())
    return digest.hexdigest()[:16]


class ChangeDetector:
    """Feed it one fingerprint per poll; it says when a change has settled and should be reloaded."""

    def __init__(self, applied: str) -> None:
        self.applied = applied
        """The fingerprint the last reload attempt saw (successful or not)."""
        self._previous = applied

    def observe(self, current: str) -> bool:
        """True when ``current`` differs from the last attempt and the previous poll saw it too."""
        settled = current == self._previous
        self._previous = current
        return settled and current != self.applied

    def attempted(self, fingerprint: str) -> None:
        """A reload looked at the files as ``fingerprint``: do not try that version again."""
        self.applied = self._previous = fingerprint


def restart_only_changes(old: Config, new: Config) -> list[Problem]:
    """One problem per setting that differs but cannot change while the process runs."""
    pairs = {
        "listen": (old.listen, new.listen),
        "admin.listen": (old.admin.listen, new.admin.listen),
        "state": (old.state, new.state),
        "shutdown_grace": (old.shutdown_grace, new.shutdown_grace),
        "errors.sentry": (old.sentry, new.sentry),
        "alerts.slack": (old.slack, new.slack),
        "webhooks.listen": (old.webhooks_listen, new.webhooks_listen),
    }
    problems = []
    for key, (before, after) in pairs.items():
        if before != after:
            shown = "" if key in ("state", "errors.sentry", "alerts.slack") else f" ({before} -> {after})"
            at = _where(new.source, key)
            if at is None:  # no line to point at: say why the value changed
                shown += " (not in the file now, so its default would apply)"
            problems.append(Problem(new.source, at.line if at else 0, at.column if at else 0, key,
                                    f"cannot change while running{shown}; restart the sidecar to apply it"))
    return problems


def _where(source: str, dotted: str) -> Mark | None:
    """Where ``dotted`` (``admin.listen``) is written in ``source``; None when it is not (a default)."""
    try:
        node = parse_yaml(Path(source).read_text(encoding="utf-8"), source, os.environ, [])
    except (OSError, UnicodeDecodeError):
        return None
    mark = None
    for key in dotted.split("."):
        if node is None or not isinstance(node.value, dict) or key not in node.value:
            return None
        mark, node = node.key_marks.get(key), node.value[key]
    return mark


def summarize(old: Config, new: Config) -> dict[str, list[str]]:
    """Upstreams added, removed and changed, for the log line of an applied reload."""
    before = {u.name: u for u in old.upstreams}
    after = {u.name: u for u in new.upstreams}
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),  # frozen: by value
    }


@dataclass(frozen=True)
class ReloadAttempt:
    """One reload attempt, as ``GET /admin/config`` shows it."""

    at: float
    trigger: str
    """``file``, ``signal`` or ``admin``."""
    result: str
    """``ok`` or ``error``."""
    version: str
    problems: tuple[str, ...] = ()


@dataclass
class RunningConfig:
    """What runs now and how the last reload went."""

    config: Config
    version: str
    loaded_at: float
    last_attempt: ReloadAttempt | None = None

    def describe(self) -> dict[str, object]:
        """The ``GET /admin/config`` body: sources, version, load time, the last attempt."""
        config = self.config
        last = self.last_attempt
        return {
            "source": config.source,
            "policy_files": list(config.policy_files),
            "version": self.version,
            "loaded_at": _iso(self.loaded_at),
            "upstreams": [{"name": u.name, "prefix": u.prefix, "url": u.url, "source": u.source}
                          for u in config.upstreams],
            "last_reload": None if last is None else {
                "at": _iso(last.at), "trigger": last.trigger, "result": last.result,
                "version": last.version, "problems": list(last.problems),
            },
        }


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
