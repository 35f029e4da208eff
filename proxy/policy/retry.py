"""When to try an attempt again, and after how long: pure decisions, time and chance passed in.

A retry must never repeat a side effect. Safe methods (GET, HEAD, OPTIONS, PUT, DELETE) retry
on the configured conditions; POST and PATCH only when the request certainly never reached the
upstream (refused, DNS, connect timeout), when the route is declared idempotent, when the
upstream's answer proves the request was not processed (Twilio documents its 429 so), or when
the request carries the route's idempotency key (a header, or a field of its JSON body such as a
Google Calendar event ``id``). A 5xx or a response timeout on Twilio's Messages POST may already
have sent the SMS: never retried by default.

``rate_limited`` in ``on`` means "the upstream told us to slow down": a 429, or a 403 whose small
JSON body gives a throttling reason (Google's ``rateLimitExceeded``): :mod:`proxy.policy.classify`
says so, and builds the :class:`RetryFacts` these rules weigh.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from proxy.config.policy_values import DUPLICATE_STATUS, RATE_LIMITED, SAFE_METHODS, TOO_MANY_REQUESTS, RetryPolicy
from proxy.policy.backoff import Random, exponential

_DELAY_SECONDS = re.compile(r"[0-9]+")
"""delay-seconds: ASCII digits only (``\\d`` would take any script's digits)."""


class RetryFacts(NamedTuple):
    """What one attempt came to, as the retry decision needs it (built by :func:`proxy.policy.classify.retry_facts`).

    A named tuple: every request that may be retried builds one for its first answer."""

    kind: str | int
    """CONNECT_ERROR, TIMEOUT, RESET, or the status code the upstream answered."""
    reached_upstream: bool = True
    retry_after: float | None = None
    throttled: bool = False
    """The answer is a throttling signal (429, or a 403 whose body says rate limit exceeded)."""


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay: float = 0.0
    reason: str = ""


def backoff(policy: RetryPolicy, retry_number: int, random: Random) -> float:
    """Wait before retry ``retry_number`` (1-based): initial * multiplier**(n-1), capped, with jitter."""
    return exponential(policy.initial, policy.multiplier, policy.max_backoff, policy.jitter, retry_number, random)


def retryable(policy: RetryPolicy, facts: RetryFacts) -> bool:
    """Is ``facts`` one of the conditions in ``policy.on``?"""
    if facts.kind in policy.on:
        return True
    return RATE_LIMITED in policy.on and (facts.throttled or facts.kind == TOO_MANY_REQUESTS)


def may_repeat(policy: RetryPolicy, method: str, facts: RetryFacts, has_idempotency_header: bool) -> bool:
    """Would sending this request again risk doing its side effect twice? ``has_idempotency_header``:
    the request carries the route's idempotency key (header or body field)."""
    if method in SAFE_METHODS or policy.idempotent or not facts.reached_upstream:
        return True
    if isinstance(facts.kind, int) and facts.kind in policy.not_processed:
        return True
    return has_idempotency_header


def decide(policy: RetryPolicy, method: str, facts: RetryFacts, retry_number: int, elapsed: float,
           has_idempotency_header: bool, random: Random) -> Decision:
    """Whether to make retry ``retry_number`` after ``facts``, ``elapsed`` seconds into the request.

    The retry budget is asked separately, last, so that a refused retry is counted only once.
    """
    if not retryable(policy, facts):
        return Decision(False, reason="not retryable")
    if retry_number > policy.attempts:
        return Decision(False, reason="attempts exhausted")
    if not may_repeat(policy, method, facts, has_idempotency_header):
        return Decision(False, reason="not idempotent")
    if facts.retry_after is not None:
        if facts.retry_after > policy.retry_after_max:
            return Decision(False, reason="retry-after too long")
        delay = facts.retry_after
    else:
        delay = backoff(policy, retry_number, random)
    if elapsed + delay >= policy.deadline:
        return Decision(False, reason="deadline")
    return Decision(True, delay=delay)


def fetch_duplicate(policy: RetryPolicy, status: int, attempts: int, key: str | None) -> bool:
    """Should a 409 be answered with the resource it names? Only on a retry (the first attempt may
    have created it), only for a route that opted in, only when the client supplied the key."""
    return status == DUPLICATE_STATUS and attempts > 1 and policy.on_duplicate == "fetch" and bool(key)


def body_key(policy: RetryPolicy, fields: Mapping[str, Any] | None) -> str | None:
    """The value of ``idempotent_when_body_has`` in the parsed body, when it is a non-empty string."""
    if not policy.idempotent_when_body_has or fields is None:
        return None
    value = fields.get(policy.idempotent_when_body_has)
    return value if isinstance(value, str) and value else None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """RFC 9110 ``Retry-After``: delay-seconds (ASCII digits) or an HTTP-date; None when absent or
    anything else. Strict because the header is the upstream's: ``'²'`` and ``'٣'`` pass
    ``str.isdigit()`` and ``int()`` reads Arabic-Indic digits, none of which is a delay."""
    if not value:
        return None
    text = value.strip(" \t")
    if not text.isascii():
        return None
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)  # inf for an absurd count of digits: longer than any wait allowed
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass
class RetryBudget:
    """Retries may add at most ``ratio`` of the route's requests, plus ``min_per_second``, over a window.

    As Linkerd's retry budget: a failing upstream sees at most (1 + ratio) times its normal load
    from retries, not (1 + attempts) times. Counts live in one-second buckets.
    """

    ratio: float
    min_per_second: float
    window: int = 10
    _buckets: deque[list[int]] = field(default_factory=deque)
    """[second, requests, retries], oldest first."""

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        while self._buckets and self._buckets[0][0] <= second - self.window:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def record_request(self, now: float) -> None:
        buckets = self._buckets
        if buckets and buckets[-1][0] == int(now):  # this second's bucket: the window moved on when it was made
            buckets[-1][1] += 1
        else:
            self._bucket(now)[1] += 1

    def try_retry(self, now: float) -> bool:
        """Spend one retry if the budget allows it."""
        bucket = self._bucket(now)
        requests = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        if retries + 1 > math.floor(self.ratio * requests + self.min_per_second * self.window):
            return False
        bucket[2] += 1
        return True
