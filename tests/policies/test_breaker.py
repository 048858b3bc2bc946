"""The circuit breaker's states: closed, open, half-open."""

from __future__ import annotations

import pytest

from bizproxy import CircuitOpen
from bizproxy.policies.breaker import CircuitBreaker


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    """N failures open it; after the cooldown one probe passes; success closes it."""
    now = [0.0]
    breaker = CircuitBreaker(3, 10.0, upstream="orders", clock=lambda: now[0])
    for _ in range(3):
        breaker.before_request()
        breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_request()
    assert caught.value.retry_after == 10.0
    now[0] = 10.0
    breaker.before_request()
    with pytest.raises(CircuitOpen):
        breaker.before_request()
    breaker.record_success()
    assert breaker.state == "closed"


def test_breaker_failed_probe_reopens() -> None:
    """A failed probe opens the breaker for another cooldown."""
    now = [0.0]
    breaker = CircuitBreaker(1, 5.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 5.0
    breaker.before_request()
    breaker.record_failure()
    assert breaker.state == "open"


def test_breaker_success_resets_the_failure_count() -> None:
    """Failures must be consecutive to open the breaker."""
    breaker = CircuitBreaker(2, 5.0)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_breaker_abandoned_probe_frees_the_next() -> None:
    """A probe released without an outcome lets the next request probe instead."""
    now = [0.0]
    breaker = CircuitBreaker(1, 5.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 5.0

    assert breaker.before_request() is True
    breaker.release_probe()

    assert breaker.before_request() is True
    with pytest.raises(CircuitOpen):
        breaker.before_request()


def test_breaker_closed_requests_are_not_probes() -> None:
    """While closed, before_request admits and says the request is no probe."""
    assert CircuitBreaker(2, 5.0).before_request() is False
