"""When the ``--workers`` supervisor restarts a dead worker, and when it gives up.

A worker that dies is restarted after a delay that doubles with each death in a row (``initial``,
capped at ``max_delay``), so a worker that keeps crashing costs little and its log stays readable.
A worker that served for ``stable_after`` seconds starts the count again.

A worker that dies before it ever became ready (both ports bound) will most likely do so again: a
port taken by another process, a certificate it cannot read. After ``give_up_after`` such deaths in
a row in one worker slot the supervisor stops every worker and exits non-zero, so that the
orchestrator sees the crash (Kubernetes: CrashLoopBackOff) instead of a process that looks alive.

Pure: the supervisor passes in the monotonic times.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartRule:
    """The numbers of the rule above."""

    initial: float = 0.5
    max_delay: float = 30.0
    give_up_after: int = 5
    stable_after: float = 60.0


RULE = RestartRule()


class WorkerSlot:
    """One of the N workers across its restarts: when it started, whether it became ready, its deaths in a row."""

    def __init__(self, rule: RestartRule = RULE) -> None:
        self.rule = rule
        self.deaths = 0
        """Deaths in a row (a worker that served ``stable_after`` seconds resets it)."""
        self.unready_deaths = 0
        """Deaths in a row of workers that never became ready."""
        self.started_at = 0.0
        self.ready_at: float | None = None

    def started(self, now: float) -> None:
        """A new worker process runs in this slot."""
        self.started_at, self.ready_at = now, None

    def ready(self, now: float) -> None:
        """The worker has bound its ports and serves."""
        if self.ready_at is None:
            self.ready_at = now
            self.unready_deaths = 0

    def died(self, now: float) -> float | None:
        """The worker exited on its own: seconds to wait before the next one, or None to give up."""
        if self.ready_at is None:
            self.unready_deaths += 1
            if self.unready_deaths >= self.rule.give_up_after:
                return None
        elif now - self.ready_at >= self.rule.stable_after:
            self.deaths = 0
        self.deaths += 1
        return min(self.rule.max_delay, self.rule.initial * 2 ** (self.deaths - 1))
