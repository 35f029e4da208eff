"""What one delivery attempt to the app means, and when the next one goes: pure, chance passed in.

2xx: completed. 5xx, 429, a timeout or a connect error: retried after the backoff (a 429's
``Retry-After`` when it asks for longer), until ``attempts`` tries were made: then a dead letter.
Any other answer (3xx, 4xx) is a dead letter at once: the app refused the event and sending it
again cannot change that. The error kept in the log is a few words, never the app's body.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.backoff import Random, exponential

COMPLETED, FAILED, DEAD_LETTER = "completed", "failed", "dead_letter"
TIMEOUT, CONNECT_ERROR, LOST = "timeout", "connect_error", "lost"
TOO_MANY_REQUESTS = 429
RETRY_AFTER_MAX = 3600.0
"""A Retry-After longer than this is read as this: an hour between tries still drains a queue."""


@dataclass(frozen=True)
class Schedule:
    """``delivery`` of a webhook, as the rules need it."""

    attempts: int = 8
    """Tries in all, the first included."""
    initial: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 300.0
    jitter: float = 0.2
    """Each wait is spread by up to this share either way, so that a fleet's retries do not march in step."""


@dataclass(frozen=True)
class Answer:
    """What one attempt came to: the app's status, or why there was none."""

    status: int = 0
    """0 when the app gave no answer."""
    error: str = ""
    """TIMEOUT, CONNECT_ERROR or LOST (the connection broke before the answer) when there was none."""
    retry_after: float | None = None
    """Seconds the app asked for (Retry-After), as parsed."""


@dataclass(frozen=True)
class Verdict:
    status: str
    """COMPLETED, FAILED (another attempt after ``delay``) or DEAD_LETTER."""
    delay: float = 0.0
    error: str = ""
    """For the delivery log: a few words, e.g. ``503 from the app``."""


def backoff(schedule: Schedule, attempt: int, random: Random) -> float:
    """Wait after failed attempt ``attempt`` (1-based): initial * multiplier**(attempt-1), capped, jittered."""
    return exponential(schedule.initial, schedule.multiplier, schedule.max_backoff, schedule.jitter, attempt, random)


def describe(answer: Answer) -> str:
    """The failure in a few words for the log (never a body)."""
    if answer.status:
        return f"{answer.status} from the app"
    return {TIMEOUT: "no answer in time", CONNECT_ERROR: "app unreachable"}.get(answer.error, "connection lost")


def retryable(answer: Answer) -> bool:
    return answer.status == 0 or answer.status >= 500 or answer.status == TOO_MANY_REQUESTS


def judge(schedule: Schedule, attempt: int, answer: Answer, random: Random) -> Verdict:
    """The verdict on attempt ``attempt`` (1-based) that came to ``answer``."""
    if 200 <= answer.status < 300:
        return Verdict(COMPLETED)
    error = describe(answer)
    if not retryable(answer):
        return Verdict(DEAD_LETTER, error=f"{error} (not retried)")
    if attempt >= schedule.attempts:
        return Verdict(DEAD_LETTER, error=f"{error} ({attempt} attempts)")
    delay = backoff(schedule, attempt, random)
    if answer.status == TOO_MANY_REQUESTS and answer.retry_after is not None:
        delay = max(delay, min(answer.retry_after, RETRY_AFTER_MAX))
    return Verdict(FAILED, delay, error)
