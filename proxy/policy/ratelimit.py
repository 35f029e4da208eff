"""Rate limits as pure values and maths: GCRA over every limit that applies to a request.

GCRA (the generic cell rate algorithm, as in redis-cell and nginx's ``limit_req``) keeps one
number per bucket, the *theoretical arrival time* (TAT) of the next call at the steady pace.
A limit of ``limit`` calls per ``per`` with a ``burst`` spaces calls ``per / limit`` apart and
tolerates ``burst`` of them arriving early, so:

- a fresh bucket lets ``burst + 1`` calls through at once, then one every ``per / limit``;
- over any window of length ``per``, at most ``limit + burst`` calls pass, however the calls
  are spread over replicas, because they all move the same TAT;
- a rejected bucket can say exactly when the next call may pass, and that time only moves
  later as other callers spend the bucket, which makes a local cache of rejections exact.

A request passes only when every enforcing limit that applies passes; then each of them is
charged one call. A rejected request charges nothing. Shadow limits are charged like the
others but never reject: they report what they would have done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from proxy.config.policy_values import MICROS, LimitPolicy, Rate, micros

ANONYMOUS = "-"
"""The key value of the shared bucket for requests without a key."""


@dataclass(frozen=True)
class Check:
    """One limit applied to one request: which bucket it spends and at what rate."""

    limit: LimitPolicy
    group: str
    """The upstream: every bucket of a request shares it (one Redis Cluster slot, one script)."""
    bucket: str
    """Unique within the group: the limit's name and the key value."""
    rate: Rate
    enforcing: bool = field(init=False, compare=False)
    """Not a shadow limit: it may reject the request."""
    key: tuple[str, str] = field(init=False, compare=False, repr=False)
    """``(group, bucket)``: the bucket's identity, as stores and caches key it."""

    def __post_init__(self) -> None:
        # Read on every request (a request's checks are made once per key value and reused): set once.
        object.__setattr__(self, "enforcing", not self.limit.shadow)
        object.__setattr__(self, "key", (self.group, self.bucket))


class Verdict(NamedTuple):
    """One limit's answer for one request, with what the RateLimit header fields report.

    A named tuple rather than a frozen dataclass: every limit of every request makes one, and a tuple
    is several times cheaper to build."""

    allowed: bool
    remaining: int
    """Calls that could still pass at once after this one."""
    reset: float
    """Seconds until the bucket is full again."""
    retry_after: float = 0.0
    """Seconds until a call could pass (0 when this one did)."""


def spend(tat: int | None, now: int, rate: Rate) -> tuple[Verdict, int]:
    """What one call at ``now`` gets from a bucket (times in microseconds), and the bucket's TAT
    if the call is charged."""
    tat = now if tat is None or tat < now else tat
    tolerance = rate.tolerance
    allow_at = tat - tolerance
    if now < allow_at:
        return Verdict(False, 0, (tat - now) / MICROS, (allow_at - now) / MICROS), tat
    interval = rate.interval
    charged = tat + interval
    remaining = (now + tolerance - charged) // interval + 1
    return Verdict(True, remaining if remaining > 0 else 0, (charged - now) / MICROS), charged  # noqa: FURB136 (no call)


def decide(checks: Sequence[Check], tats: Sequence[int | None], now: int) -> tuple[list[Verdict], list[int | None]]:
    """Every check's verdict, and the TATs to store: the charged ones when the request passes
    (None where a bucket is left alone), nothing at all when an enforcing limit rejects it."""
    verdicts: list[Verdict] = []
    charged: list[int | None] = []
    refused = False
    for check, tat in zip(checks, tats):
        verdict, new_tat = spend(tat, now, check.rate)
        verdicts.append(verdict)
        if verdict.allowed:
            charged.append(new_tat)
        else:
            charged.append(None)
            refused = refused or check.enforcing
    if refused:
        return verdicts, [None] * len(checks)
    return verdicts, charged


def hold(tat: int | None, now: int, rate: Rate, seconds: float) -> int:
    """The TAT that lets no call through for ``seconds`` (the upstream asked us to wait)."""
    held = now + micros(seconds) + rate.tolerance
    return held if tat is None or tat < held else tat


def passed(checks: Sequence[Check], verdicts: Sequence[Verdict]) -> bool:
    return all(verdict.allowed or not check.enforcing for check, verdict in zip(checks, verdicts))


def blocking(checks: Sequence[Check], verdicts: Sequence[Verdict]) -> int | None:
    """The index of the enforcing limit that rejects for longest (None when the request passes)."""
    rejected = [i for i, (c, v) in enumerate(zip(checks, verdicts)) if c.enforcing and not v.allowed]
    return max(rejected, key=lambda i: verdicts[i].retry_after) if rejected else None


def most_restrictive(checks: Sequence[Check], verdicts: Sequence[Verdict]) -> int | None:
    """The index of the enforcing limit with the fewest calls left (the longest reset breaks ties)."""
    shown: int | None = None
    fewest, longest = 0, 0.0
    for i, check in enumerate(checks):
        if check.enforcing:
            verdict = verdicts[i]
            if shown is None or verdict.remaining < fewest or (verdict.remaining == fewest and verdict.reset > longest):
                shown, fewest, longest = i, verdict.remaining, verdict.reset
    return shown
