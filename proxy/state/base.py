"""What a breaker store offers: the interface every backend implements.

The hot path reads :meth:`BreakerStore.view`, a local copy that costs no I/O: a closed
breaker never waits on a backend. Only an open breaker whose time is up (a probe) and
operator actions make a round trip. Outcomes are handed over without waiting; a backend may
apply them at once (memory) or in batches (Redis). Transitions this process makes are passed
to the one callable the store was given (the sidecar's EventBus, which fans them out);
transitions made elsewhere in the fleet only update the views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.config.policy_values import BreakerPolicy
from proxy.events import BreakerTransition
from proxy.policy.breaker import Action, Admission, State
from proxy.policy.ratelimit import Check, Verdict

TransitionEmit = Callable[[BreakerTransition], None]


def ignore(event: object) -> None:
    """What a store emits to until it is given somewhere to emit."""


@dataclass(frozen=True)
class BreakerView:
    """A read-only copy of one breaker's state, as the hot path and the admin API see it."""

    key: str
    state: State = State.CLOSED
    open_until: float = 0.0
    reason: str = ""
    forced_by: str = ""
    failures: int = 0
    changed_at: float = 0.0
    version: int = 0
    probes_in_flight: int = 0
    """Half-open: probes admitted and not yet answered, fleet-wide. Only :meth:`BreakerStore.views` (a
    fresh read) is sure to fill it in; the hot path never needs it."""

    @property
    def admits_freely(self) -> bool:
        """True when a request may pass without asking the store."""
        return self.state in (State.CLOSED, State.DISABLED)


class BreakerStore(Protocol):
    @property
    def backend_up(self) -> bool:
        """False while a shared backend is unreachable and local state stands in for it."""
        ...

    def view(self, key: str) -> BreakerView:
        """The locally known state of ``key``; never does I/O."""
        ...

    async def admit(self, key: str, policy: BreakerPolicy) -> Admission:
        """Atomically decide whether a request may pass a breaker that is not closed (probes)."""
        ...

    def record(self, key: str, policy: BreakerPolicy, failed: bool, probe: bool) -> None:
        """Hand over one outcome; never blocks the request."""
        ...

    async def force(self, key: str, policy: BreakerPolicy, action: Action, actor: str) -> BreakerTransition:
        """Apply an operator override for the whole fleet."""
        ...

    async def views(self, keys: list[str]) -> list[BreakerView]:
        """Fresh state of ``keys`` from the backend, for the admin API."""
        ...

    async def flush(self) -> None:
        """Apply every outcome handed over so far (a batching backend sends them now)."""
        ...

    def emit_to(self, emit: TransitionEmit) -> None:
        """Hand every transition this process makes to ``emit`` (replacing the one given before)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class BackendUnavailable(Exception):
    """The shared backend could not decide: it failed, or gave no answer in time (:class:`BackendTimeout`).

    The only error a store's backend raises; redis-py's own become this one in one place
    (:func:`proxy.state.redis.client.translated`). The limiter applies each limit's ``on_backend_error``.
    """


class BackendTimeout(BackendUnavailable):
    """No answer within the timeout: the backend may hang, or this process's event loop may be late."""


class LimitStore(Protocol):
    """Where rate-limit buckets live: one process (memory) or the whole fleet (Redis)."""

    @property
    def backend_up(self) -> bool: ...

    async def acquire(self, checks: Sequence[Check]) -> list[Verdict]:
        """Decide every check at once, atomically, as :func:`proxy.policy.ratelimit.decide` does: the
        buckets are charged only when the request passes. Raises BackendUnavailable within the timeout."""
        ...

    async def hold(self, checks: Sequence[Check], seconds: float) -> None:
        """Let no call through these buckets for ``seconds`` (the upstream said so). Raises BackendUnavailable."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
