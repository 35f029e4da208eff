"""Exponential backoff with jitter: the one formula behind upstream retries and webhook deliveries."""

from __future__ import annotations

from collections.abc import Callable

Random = Callable[[], float]
"""A source of chance in [0, 1): ``random.random`` in production, a constant in tests."""


def exponential(initial: float, multiplier: float, cap: float, jitter: float, number: int, random: Random) -> float:
    """The wait before try ``number`` + 1 (``number`` 1-based): ``initial * multiplier**(number-1)``,
    at most ``cap``, varied by up to ``jitter`` of itself either way so that clients do not move in lockstep."""
    base = min(initial * multiplier ** (number - 1), cap)
    return max(0.0, base * (1 + jitter * (2 * random() - 1)))
