"""The policies' values, as config reads them: frozen, validated, with their defaults.

The rules that act on them are pure functions in :mod:`proxy.policy` (breaker, retry, rate limit);
config builds these values and imports nothing above itself, so the arrows point one way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and for how long. Zero turns a trip condition off."""

    consecutive_failures: int = 3
    failure_rate: float = 0.0
    """Share of failed calls (0 < rate <= 1) over ``window`` that opens the breaker."""
    window: int = 60
    """Seconds of history for the failure rate (whole seconds: one bucket per second)."""
    min_calls: int = 20
    """Calls needed in the window before the failure rate is judged."""
    slow_call: float = 0.0
    """Calls slower than this many seconds count as failures (0: off)."""
    open_for: float = 30.0
    open_for_max: float = 0.0
    """Cap for the open time, which grows by ``open_multiplier`` on each re-open from half-open
    (0: no growth, always ``open_for``)."""
    open_multiplier: float = 2.0
    jitter: float = 0.1
    """Open times vary by up to this fraction either way, so a fleet does not probe in lockstep."""
    half_open_probes: int = 1


CONNECT_ERROR = "connect_error"
TIMEOUT = "timeout"
RESET = "reset"
KINDS = frozenset({CONNECT_ERROR, TIMEOUT, RESET})
RATE_LIMITED = "rate_limited"
"""A condition, not a kind: a 429, or any answer the upstream's body marks as throttling."""
CONDITIONS = KINDS | {RATE_LIMITED}
TOO_MANY_REQUESTS = 429
"""The upstream's "slow down": a rate-limit signal, never a breaker failure."""
DUPLICATE_STATUS = 409
"""What an insert answers when the client-chosen id already exists (Google Calendar's ``duplicate``)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    """Retries after the first try (0: never retry)."""
    initial: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 4.0
    jitter: float = 0.2
    """Each wait varies by up to this fraction either way, so clients do not retry in lockstep."""
    on: frozenset[str | int] = frozenset({CONNECT_ERROR, TIMEOUT, 502, 503, 504, 429})
    deadline: float = 30.0
    """Everything, every attempt and wait, must fit in this; a wait that would cross it is not taken."""
    per_try_timeout: float = 0.0
    """Each attempt's timeout (0: the upstream's ``timeout``); always cut to what is left of the deadline."""
    retry_after_max: float = 30.0
    """A longer Retry-After is not waited for: the answer goes back to the client at once."""
    idempotent: bool = False
    not_processed: frozenset[int] = frozenset()
    """Statuses that prove a POST/PATCH was not processed, so it may be repeated."""
    idempotency_header: str = ""
    idempotent_when_body_has: str = ""
    """A top-level field of the JSON/form body that makes a POST repeatable when present (a client-chosen
    id: the upstream refuses the repeat as a duplicate instead of creating a second resource)."""
    on_duplicate: str = "relay"
    """``fetch``: a retry answered 409 means the first attempt created the resource: answer with a GET of
    ``<request path>/<id>`` instead. ``relay``: pass the 409 on."""
    budget_ratio: float = 0.2
    budget_min_per_second: float = 3.0
    replay_limit: int = 2**20
    """Bodies up to this size are kept for replay; larger ones stream through and are never retried."""


MICROS = 1_000_000
"""Time is counted in whole microseconds: adding a float interval to an epoch time a thousand times
drifts by a tenth of a millisecond, integers do not, so a count at a boundary is exact. Integers up
to 2**53 are exact in Lua's doubles too (epoch microseconds are about 2**51)."""


def micros(seconds: float) -> int:
    return round(seconds * MICROS)


@dataclass(frozen=True)
class Rate:
    """``limit`` calls per ``per`` seconds, ``burst`` of which may arrive ahead of the pace."""

    limit: int
    per: float
    burst: int

    # Cached (the rate is immutable): every limit of every request reads both, several times.
    @cached_property
    def interval(self) -> int:
        """Microseconds between calls at the steady pace, rounded up so that the rate is never exceeded."""
        return -(-micros(self.per) // self.limit)

    @cached_property
    def tolerance(self) -> int:
        """Microseconds a bucket may run ahead of the pace."""
        return self.burst * self.interval

    def share(self, fraction: float) -> Rate:
        """This rate scaled to ``fraction`` of it (a replica's part while the shared backend is down)."""
        return Rate(max(1, math.floor(self.limit * fraction)), self.per, math.floor(self.burst * fraction))


class KeyKind(str, Enum):
    """What identifies a bucket; ``header``, ``path`` carry a name (``header:X-Tenant``, ``path:calendarId``)."""

    ORG = "org"
    IP = "ip"
    GLOBAL = "global"
    BASIC_AUTH_USER = "basic_auth_user"
    HEADER = "header"
    PATH = "path"


class MissingKey(str, Enum):
    """What a limit does with a request that lacks its key."""

    REJECT = "reject"
    """400: the caller must say who it is."""
    ANONYMOUS = "anonymous"
    """Every such request shares one bucket."""
    SKIP = "skip"
    """The limit does not apply."""


class BackendError(str, Enum):
    """What a limit does while the shared backend cannot be reached."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class LimitPolicy:
    """One ``rate_limits`` entry, resolved."""

    name: str
    kind: KeyKind
    rate: Rate
    key_name: str = ""
    """The header or path capture, for ``header:`` and ``path:`` keys."""
    shadow: bool = False
    on_backend_error: BackendError = BackendError.ALLOW
    local_share: float = 0.0
    """With ``allow``: the fraction of the rate enforced per process while the backend is down (0: none)."""
    on_missing_key: MissingKey = MissingKey.ANONYMOUS
    overrides: tuple[tuple[str, Rate], ...] = ()
    """Per key value, e.g. organisation ``acme`` gets 5000/h."""
    honor_upstream_retry_after: bool = True
    """A 429 from the upstream holds this limit's bucket for the upstream's Retry-After."""
    _by_value: Mapping[str, Rate] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_value", dict(self.overrides))

    @property
    def key(self) -> str:
        """The key as written in YAML."""
        return f"{self.kind.value}:{self.key_name}" if self.key_name else self.kind.value

    def rate_for(self, value: str) -> Rate:
        return self._by_value.get(value, self.rate)
