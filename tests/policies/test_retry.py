"""Retry policies: backoff, conditions, idempotency and the retry budget."""

from __future__ import annotations

import random

import pytest

from bizproxy import ConnectionFailure, UpstreamError, UpstreamTimeout
from bizproxy.policies.retry import (
    AttemptFailure,
    Backoff,
    PluginRetryPolicy,
    RetryBudget,
    RetryPolicy,
)


def failure(
    error: Exception, *, attempt: int = 1, method: str = "GET", key: bool = False
) -> AttemptFailure:
    return AttemptFailure(attempt=attempt, method=method, error=error, has_idempotency_key=key)  # type: ignore[arg-type]


def test_backoff_full_jitter_stays_under_the_capped_exponential() -> None:
    """Full jitter draws from [0, min(max, initial * multiplier**n)] and varies."""
    backoff = Backoff(initial_seconds=0.1, max_seconds=1.0, multiplier=2)
    rng = random.Random(7)
    for retry in range(1, 8):
        ceiling = min(1.0, 0.1 * 2 ** (retry - 1))
        delays = [backoff.delay(retry, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100


def test_backoff_without_jitter_is_exponential_and_capped() -> None:
    """jitter: none gives initial, initial*m, ... up to max exactly."""
    backoff = Backoff(initial_seconds=0.1, max_seconds=0.5, multiplier=2, jitter="none")
    delays = [backoff.delay(n, None, random.Random()) for n in range(1, 6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_backoff_decorrelated_stays_within_bounds() -> None:
    """Decorrelated jitter stays between initial and max."""
    backoff = Backoff(initial_seconds=0.1, max_seconds=2.0, jitter="decorrelated")
    rng = random.Random(3)
    previous = None
    for retry in range(1, 50):
        previous = backoff.delay(retry, previous, rng)
        assert 0.1 <= previous <= 2.0


async def test_retry_policy_stops_at_the_attempt_bound() -> None:
    """No retry is allowed once `attempts` tries were made, the first included."""
    policy = RetryPolicy(attempts=3)
    error = ConnectionFailure("x", kind="connect-error")
    assert await policy.should_retry(failure(error, attempt=1))
    assert await policy.should_retry(failure(error, attempt=2))
    assert not await policy.should_retry(failure(error, attempt=3))


async def test_retry_policy_connect_error_is_always_safe_to_retry() -> None:
    """A POST that never left (connect error) may be retried; once sent, it may not."""
    policy = RetryPolicy()
    never_sent = ConnectionFailure("x", kind="connect-error", reached_upstream=False)
    sent = ConnectionFailure("x", kind="reset", reached_upstream=True)
    assert await policy.should_retry(failure(never_sent, method="POST"))
    assert not await policy.should_retry(failure(sent, method="POST"))
    assert not await policy.should_retry(failure(sent, method="POST", key=True))


async def test_retry_policy_non_idempotent_needs_opt_in_and_a_key() -> None:
    """retry_non_idempotent retries a sent POST only when it carries an idempotency key."""
    policy = RetryPolicy(retry_non_idempotent=True)
    error = UpstreamError("503", status=503)
    assert await policy.should_retry(failure(error, method="POST", key=True))
    assert not await policy.should_retry(failure(error, method="POST", key=False))


async def test_retry_policy_matches_words_codes_and_ranges() -> None:
    """retry_on takes words, status codes and ranges such as 500-599."""
    policy = RetryPolicy(retry_on=("timeout", 429, "500-502"))
    assert await policy.should_retry(failure(UpstreamTimeout("t")))
    assert await policy.should_retry(failure(UpstreamError("s", status=429)))
    assert await policy.should_retry(failure(UpstreamError("s", status=501)))
    assert not await policy.should_retry(failure(UpstreamError("s", status=503)))
    assert not await policy.should_retry(failure(ConnectionFailure("c", kind="reset")))


async def test_plugin_retry_policy_awaits_async_callables_and_stays_bounded() -> None:
    """An async plug-in is awaited, and attempts stay bounded whatever it says."""

    async def always(error: BaseException, attempt: int) -> bool:
        return True

    policy = PluginRetryPolicy(decide=always, attempts=2)
    error = ConnectionFailure("x")
    assert await policy.should_retry(failure(error, attempt=1))
    assert not await policy.should_retry(failure(error, attempt=2))


def test_retry_policy_rejects_zero_attempts() -> None:
    """A policy with no attempt at all is a programming error, said plainly."""
    with pytest.raises(ValueError, match="at least 1 attempt, got 0"):
        RetryPolicy(attempts=0)


def test_retry_budget_caps_retries_at_a_share_of_requests() -> None:
    """With 1,000 requests and a 20% budget, at most 200 retries (plus the floor) pass."""
    now = [100.0]
    budget = RetryBudget(0.2, min_retries=3, clock=lambda: now[0])
    granted = 0
    for _ in range(1000):
        budget.record_request()
        granted += budget.try_spend_retry()
        granted += budget.try_spend_retry()
    assert 200 <= granted <= 203


def test_retry_budget_forgets_old_requests() -> None:
    """Requests older than the window no longer fund retries."""
    now = [100.0]
    budget = RetryBudget(0.5, window_seconds=10, min_retries=0, clock=lambda: now[0])
    for _ in range(10):
        budget.record_request()
    now[0] += 11
    assert not budget.try_spend_retry()


async def test_plugin_retry_policy_keeps_the_idempotency_rules() -> None:
    """A plug-in is not asked about a POST that reached the upstream without opt-in and key."""
    asked: list[int] = []

    def always(error: BaseException, attempt: int) -> bool:
        asked.append(attempt)
        return True

    sent = UpstreamError("503", status=503)
    never_sent = ConnectionFailure("x", kind="connect-error", reached_upstream=False)
    plain = PluginRetryPolicy(decide=always)
    opted_in = PluginRetryPolicy(decide=always, retry_non_idempotent=True)

    assert not await plain.should_retry(failure(sent, method="POST", key=True))
    assert not await opted_in.should_retry(failure(sent, method="POST", key=False))
    assert asked == []
    assert await opted_in.should_retry(failure(sent, method="POST", key=True))
    assert await plain.should_retry(failure(never_sent, method="POST"))
    assert asked == [1, 1]


def test_retry_budget_under_outage_stays_within_share_plus_floor() -> None:
    """Every request failing and asking for 2 retries: attempts <= (1 + ratio) x N + floor."""
    now = [100.0]
    budget = RetryBudget(0.2, clock=lambda: now[0])
    attempts = 0
    for _ in range(500):
        budget.record_request()
        attempts += 1
        for _ in range(2):
            if not budget.try_spend_retry():
                break
            attempts += 1
        now[0] += 0.01

    assert attempts <= 1.2 * 500 + budget.min_retries
    assert attempts >= 1.2 * 500
