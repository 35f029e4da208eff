"""Rate limits on a Redis Cluster: each bucket on its own slot, and the refund that keeps "all limits or none".

On one Redis (and through Sentinel) every bucket of a request sits under the upstream's hash tag
``{rl:<upstream>}`` and one script decides them all. On a cluster that tag would put all of an
upstream's rate-limit traffic on one master, whatever the number of masters. So in cluster mode a
bucket is ``<prefix>{rl:<upstream>:<bucket>}``: each limit key (``per_org:acme``, ``hourly:-``) hashes
to its own slot and the buckets spread over the masters. The store runs ``ratelimit.lua`` once per
slot, all at once, each call atomic over its own buckets (check, then charge only if none of them
denies). A request that one slot denies was charged by the others: they get :func:`refunds` at once.

What the refund keeps: a request that a limit denies charges no other limit, as with one Redis.
It gives back ``min(interval, charged TAT - now)``: exactly the request's charge when no time passed,
and never more than what the charge still holds (a bucket that was idle when charged absorbed part
of it), so a refund never lets a limit admit more than one Redis would. The cost: one EVALSHA per
limit key instead of one per request, and between a charge and its refund (one round trip) another
request may find that budget spent and be denied where one Redis would have let it through. A request
whose call fails on one slot (a timeout, a failover) keeps what the other slots charged: the limiter
decides it by ``on_backend_error``, and the error errs on the side of fewer calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot

from proxy.policy.ratelimit import Check

Group = list[int]
"""Indices into a request's checks whose buckets share one slot."""


def shard_key(prefix: str, check: Check) -> str:
    """``rp:{rl:twilio:per_org:acme}``: the whole bucket name is the hash tag, one slot per limit key."""
    return f"{prefix}{{rl:{check.group}:{check.bucket}}}"


def by_slot(keys: Sequence[str]) -> list[Group]:
    """The indices of ``keys`` grouped by hash slot, in first-seen order."""
    groups: dict[int, Group] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode()), []).append(index)
    return list(groups.values())


def denies(checks: Sequence[Check], rows: Sequence[Sequence[Any]], group: Group) -> bool:
    """Whether an enforcing limit of ``group`` denied the request (then its script charged nothing there)."""
    return any(checks[i].enforcing and rows[i][0] != "1" for i in group)


def refunds(checks: Sequence[Check], groups: Sequence[Group], rows: Sequence[Sequence[Any]], charged_at: int,
            now: int) -> list[list[tuple[int, int]]]:
    """Per slot that charged a request some other slot denied: (check index, microseconds to give back).
    Empty when the request passed. ``charged_at``: the ``now`` the scripts ran with; ``now``: the refund's."""
    if not any(denies(checks, rows, group) for group in groups):
        return []
    out = []
    for group in groups:
        if denies(checks, rows, group):
            continue
        back = [(i, refund(checks[i].rate.interval, charged_at + int(rows[i][2]), now)) for i in group
                if rows[i][0] == "1"]
        back = [(i, amount) for i, amount in back if amount > 0]
        if back:
            out.append(back)
    return out


def refund(interval: int, charged_tat: int, now: int) -> int:
    """What a refund may give back: the charge, less the part of it that time has used up since."""
    return min(interval, max(0, charged_tat - now))
