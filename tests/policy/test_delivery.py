"""What an app's answer to a webhook delivery means, and when the next try goes."""

from __future__ import annotations

import pytest

from proxy.policy.delivery import (
    COMPLETED,
    CONNECT_ERROR,
    DEAD_LETTER,
    FAILED,
    LOST,
    TIMEOUT,
    Answer,
    Schedule,
    Verdict,
    backoff,
    judge,
)

SCHEDULE = Schedule(attempts=4, initial=1.0, multiplier=2.0, max_backoff=5.0, jitter=0.0)


def middle() -> float:
    return 0.5


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_completes(status: int) -> None:
    assert judge(SCHEDULE, 1, Answer(status), middle) == Verdict(COMPLETED)


@pytest.mark.parametrize("answer, error", [
    (Answer(500), "500 from the app"), (Answer(503), "503 from the app"), (Answer(429), "429 from the app"),
    (Answer(error=TIMEOUT), "no answer in time"), (Answer(error=CONNECT_ERROR), "app unreachable"),
    (Answer(error=LOST), "connection lost"),
])
def test_server_errors_throttling_and_no_answer_are_retried(answer: Answer, error: str) -> None:
    assert judge(SCHEDULE, 1, answer, middle) == Verdict(FAILED, 1.0, error)


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 409, 410, 422])
def test_other_answers_are_dead_letters_at_once(status: int) -> None:
    assert judge(SCHEDULE, 1, Answer(status), middle) == Verdict(DEAD_LETTER, error=f"{status} from the app (not retried)")


def test_the_last_attempt_makes_a_dead_letter() -> None:
    assert judge(SCHEDULE, 3, Answer(503), middle).status == FAILED
    assert judge(SCHEDULE, 4, Answer(503), middle) == Verdict(DEAD_LETTER, error="503 from the app (4 attempts)")


def test_backoff_grows_by_the_multiplier_up_to_the_cap() -> None:
    assert [backoff(SCHEDULE, n, middle) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_spreads_each_wait_both_ways() -> None:
    jittered = Schedule(initial=10.0, max_backoff=100.0, jitter=0.2)
    assert (backoff(jittered, 1, lambda: 0.0), backoff(jittered, 1, lambda: 0.999999)) == pytest.approx((8.0, 12.0))


def test_a_429_waits_as_long_as_retry_after_asks_within_an_hour() -> None:
    assert judge(SCHEDULE, 1, Answer(429, retry_after=30.0), middle).delay == 30.0
    assert judge(SCHEDULE, 1, Answer(429, retry_after=0.0), middle).delay == 1.0  # never sooner than the backoff
    assert judge(SCHEDULE, 1, Answer(429, retry_after=86_400.0), middle).delay == 3600.0
    assert judge(SCHEDULE, 1, Answer(503, retry_after=30.0), middle).delay == 1.0  # only a 429's is honoured
