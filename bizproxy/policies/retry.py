"""Retry policies: when to try again, how long to wait, and how much retrying an upstream may take.

A policy answers one question per failed attempt: retry, and after how long? It knows
nothing of HTTP clients; the proxy describes each failure as an `AttemptFailure`.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bizproxy.errors import BusinessProxyException, ConnectionFailure, UpstreamError
from bizproxy.interface import RetryPluginCallable

logger = logging.getLogger("bizproxy.retry")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DEFAULT_RETRY_ON = ("connect-error", "timeout", "reset", 502, 503, 504)
RETRY_AFTER_STATUSES = frozenset({429, 503})

Jitter = Literal["full", "none", "decorrelated"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: initial * multiplier**(retry-1), capped at max, then jittered."""

    initial_seconds: float = 0.1
    max_seconds: float = 2.0
    multiplier: float = 2.0
    jitter: Jitter = "full"

    def delay(self, retry_number: int, previous_seconds: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry)."""
        if self.jitter == "decorrelated":
            low = self.initial_seconds
            high = max(low, (previous_seconds or low) * 3)
            return min(self.max_seconds, rng.uniform(low, high))
        ceiling = min(
            self.max_seconds, self.initial_seconds * self.multiplier ** (retry_number - 1)
        )
        if self.jitter == "none":
            return ceiling
        return rng.uniform(0, ceiling)


@dataclass(frozen=True)
class AttemptFailure:
    """What went wrong with one attempt, as a retry policy needs to see it."""

    attempt: int
    method: str
    error: BusinessProxyException
    has_idempotency_key: bool
    retry_after_seconds: float | None = None

    @property
    def condition(self) -> str | int:
        """The `retry_on` word or status code this failure matches."""
        if isinstance(self.error, UpstreamError):
            return self.error.status
        if isinstance(self.error, ConnectionFailure):
            return self.error.kind
        return "error"

    @property
    def reached_upstream(self) -> bool:
        if isinstance(self.error, ConnectionFailure):
            return self.error.reached_upstream
        return True


class RetryDecider(Protocol):
    """What the proxy asks of a retry policy."""

    @property
    def max_attempts(self) -> int: ...

    @property
    def per_try_timeout_seconds(self) -> float | None: ...

    @property
    def deadline_seconds(self) -> float | None: ...

    @property
    def respect_retry_after(self) -> bool: ...

    @property
    def budget_ratio(self) -> float | None: ...

    async def should_retry(self, failure: AttemptFailure) -> bool: ...

    def backoff_seconds(self, retry_number: int, previous_seconds: float | None) -> float: ...


def is_safe_to_repeat(
    failure: AttemptFailure, methods: frozenset[str], retry_non_idempotent: bool
) -> bool:
    """A retry is safe when nothing was sent, or when repeating the request is harmless.

    Once a request may have reached the upstream, only `methods` are repeated, and any
    other method only with `retry_non_idempotent` and an idempotency key on the request.
    """
    if not failure.reached_upstream:
        return True
    if failure.method.upper() in methods:
        return True
    return retry_non_idempotent and failure.has_idempotency_key


def _status_matcher(retry_on: Iterable[str | int]) -> tuple[frozenset[str], frozenset[int]]:
    words: set[str] = set()
    statuses: set[int] = set()
    for item in retry_on:
        if isinstance(item, int):
            statuses.add(item)
        elif "-" in item and item.replace("-", "").isdigit():
            low, high = (int(part) for part in item.split("-", 1))
            statuses.update(range(low, high + 1))
        elif item.isdigit():
            statuses.add(int(item))
        else:
            words.add(item)
    return frozenset(words), frozenset(statuses)


@dataclass(frozen=True, kw_only=True)
class RetryBounds:
    """What every retry policy has: bounded attempts, backoff, time limits, a budget, and
    the idempotency rules (see `is_safe_to_repeat`)."""

    attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    methods: frozenset[str] = IDEMPOTENT_METHODS
    per_try_timeout_seconds: float | None = None
    deadline_seconds: float | None = None
    """The overall limit over every attempt and wait; a route's own timeout may lower it."""
    respect_retry_after: bool = True
    budget_ratio: float | None = 0.2
    retry_non_idempotent: bool = False
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least 1 attempt, got {self.attempts}")

    @property
    def max_attempts(self) -> int:
        return self.attempts

    def may_repeat(self, failure: AttemptFailure) -> bool:
        """Attempts are left, and repeating this request is safe."""
        if failure.attempt >= self.attempts:
            return False
        return is_safe_to_repeat(failure, self.methods, self.retry_non_idempotent)

    def backoff_seconds(self, retry_number: int, previous_seconds: float | None) -> float:
        return self.backoff.delay(retry_number, previous_seconds, self.rng)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy(RetryBounds):
    """A declared retry policy: the failures in `retry_on` are retried, within the bounds."""

    retry_on: tuple[str | int, ...] = DEFAULT_RETRY_ON

    def __post_init__(self) -> None:
        super().__post_init__()
        words, statuses = _status_matcher(self.retry_on)
        object.__setattr__(self, "_words", words)
        object.__setattr__(self, "_statuses", statuses)

    def matches(self, failure: AttemptFailure) -> bool:
        condition = failure.condition
        if isinstance(condition, int):
            return condition in self._statuses  # type: ignore[attr-defined]
        return condition in self._words  # type: ignore[attr-defined]

    async def should_retry(self, failure: AttemptFailure) -> bool:
        return self.may_repeat(failure) and self.matches(failure)


NO_RETRY = RetryPolicy(attempts=1, budget_ratio=None)
"""Send once, never again."""


@dataclass(frozen=True, kw_only=True)
class PluginRetryPolicy(RetryBounds):
    """A retry policy that asks a Python callable `(exception, attempt) -> bool`.

    The callable decides which failures to retry; the bounds hold as for a declared
    policy: a plug-in cannot retry forever, without pause, or repeat a POST that may have
    reached the upstream.
    """

    decide: RetryPluginCallable

    async def should_retry(self, failure: AttemptFailure) -> bool:
        if not self.may_repeat(failure):
            return False
        try:
            verdict = self.decide(failure.error, failure.attempt)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception:
            # A broken plug-in must not turn an upstream failure into a crash: no retry.
            logger.warning("retry plug-in %r failed; not retrying", self.decide, exc_info=True)
            return False
        return bool(verdict)


def as_retry_policy(policy: RetryDecider | RetryPluginCallable | None) -> RetryDecider:
    """Accept a policy object, a seed-style callable, or None (the bounded default)."""
    if policy is None:
        return RetryPolicy()
    if hasattr(policy, "should_retry") and hasattr(policy, "max_attempts"):
        return policy  # type: ignore[return-value]
    if callable(policy):
        return PluginRetryPolicy(decide=policy)
    raise TypeError(f"expected a retry policy or a callable (exception, attempt), got {policy!r}")


RETRY_BUDGET_WINDOW_SECONDS = 10.0
"""How far back a retry budget counts requests and retries."""

RETRY_BUDGET_FLOOR = 3
"""Retries allowed per window whatever the share, so a quiet upstream can still retry."""


class RetryBudget:
    """Retries may be at most `ratio` of the requests seen in the last `window_seconds`.

    A floor of `min_retries` per window lets a quiet upstream still retry. Under a total
    outage, with N requests in a window, the attempts sent are at most
    N + ratio * N + min_retries, however many clients send them.
    """

    def __init__(
        self,
        ratio: float,
        *,
        window_seconds: float = RETRY_BUDGET_WINDOW_SECONDS,
        min_retries: int = RETRY_BUDGET_FLOOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self._slot_seconds = window_seconds / 10
        self._slots = 10
        self._requests = [0] * self._slots
        self._retries = [0] * self._slots
        self._slot_ids = [-1] * self._slots
        self._clock = clock

    def _slot(self) -> int:
        slot_id = int(self._clock() / self._slot_seconds)
        index = slot_id % self._slots
        if self._slot_ids[index] != slot_id:
            self._slot_ids[index] = slot_id
            self._requests[index] = 0
            self._retries[index] = 0
        return index

    def _live(self, counts: list[int]) -> int:
        newest = int(self._clock() / self._slot_seconds)
        return sum(
            count
            for count, slot_id in zip(counts, self._slot_ids, strict=True)
            if newest - slot_id < self._slots
        )

    def record_request(self) -> None:
        self._requests[self._slot()] += 1

    def try_spend_retry(self) -> bool:
        """Take one retry from the budget; False when the budget is spent."""
        index = self._slot()
        allowed = self.ratio * self._live(self._requests) + self.min_retries
        if self._live(self._retries) + 1 > allowed:
            return False
        self._retries[index] += 1
        return True
