"""A circuit breaker per upstream: stop calling an upstream that keeps failing, then probe it.

closed ──N consecutive failures──► open ──cooldown──► half-open ──probe ok──► closed
                                     ▲                    │
                                     └────probe failed────┘
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from bizproxy.errors import CircuitOpen

BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Opens after `failures` consecutive failures, for `cooldown_seconds`; one probe at a time."""

    def __init__(
        self,
        failures: int = 5,
        cooldown_seconds: float = 30.0,
        *,
        upstream: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1:
            raise ValueError(f"a breaker needs at least 1 failure to open, got {failures}")
        self.failure_threshold = failures
        self.cooldown_seconds = cooldown_seconds
        self.upstream = upstream
        self._clock = clock
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_seconds:
            return "half-open"
        return "open"

    def before_request(self) -> bool:
        """Raise CircuitOpen unless a request may go to the upstream now; True for a probe."""
        state = self.state
        if state == "closed":
            return False
        if state == "half-open" and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        opened_at = self._opened_at if self._opened_at is not None else self._clock()
        retry_after = max(0.0, self.cooldown_seconds - (self._clock() - opened_at))
        raise CircuitOpen(
            f"circuit breaker for upstream {self.upstream!r} is open after "
            f"{self._consecutive_failures} consecutive failures",
            upstream=self.upstream,
            retry_after=retry_after if state == "open" else self.cooldown_seconds,
        )

    def release_probe(self) -> None:
        """Forget a probe that ended without an outcome (cancelled), so another may go."""
        self._probe_in_flight = False

    def record_success(self) -> None:
        self._consecutive_failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def record_failure(self) -> None:
        self._consecutive_failures += 1
        if self._probe_in_flight or self._consecutive_failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._probe_in_flight = False
