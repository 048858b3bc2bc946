"""Token buckets by key, and the in-process store that keeps them.

Buckets are kept in GCRA form (the generic cell rate algorithm): one number per key,
the *theoretical arrival time* `tat`, the moment the bucket would be full again. With
`interval = 1 / rate`, a take at `now` is admitted when `max(tat, now) + interval -
burst * interval <= now`, and then moves `tat` on by one interval. This is a token
bucket of size `burst` refilled at `rate`, exactly: over any window of `w` seconds at
most `rate * w + burst` takes are admitted, and a refusal knows to the microsecond how
long until the next token. A bucket whose `tat` has passed is full, so forgetting it
loses nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

Clock = Callable[[], float]


@runtime_checkable
class ThrottleStore(Protocol):
    """Where token buckets live: this process, or a server shared by many."""

    async def take(self, key: str, rate_per_second: float, burst: int) -> float:
        """Take one token from the bucket `key`; return 0.0 if admitted.

        Otherwise return the seconds until a token is available; a refusal takes nothing.
        """
        ...

    async def close(self) -> None:
        """Release what the store holds open; idempotent."""
        ...


def check_budget(rate_per_second: float, burst: int) -> None:
    """Refuse a rate or burst no bucket can have."""
    if not rate_per_second > 0:
        raise ValueError(f"rate_per_second must be positive, got {rate_per_second!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst!r}")


class MemoryThrottleStore:
    """Token buckets in this process; the default store.

    `max_buckets` is where the table starts shedding buckets that are full again (they
    carry no state). Buckets still refilling are kept even past it, because dropping one
    would hand its key a fresh burst.
    """

    def __init__(self, *, clock: Clock = time.monotonic, max_buckets: int = 10_000) -> None:
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be at least 1, got {max_buckets!r}")
        self._clock = clock
        self.max_buckets = max_buckets
        self._sweep_at = max_buckets
        self._tat: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._tat)

    async def take(self, key: str, rate_per_second: float, burst: int) -> float:
        """Take one token from the bucket `key`; 0.0 if admitted, else seconds to wait."""
        return self.take_now(key, rate_per_second, burst)

    def take_now(self, key: str, rate_per_second: float, burst: int) -> float:
        """The same decision as `take`, without awaiting: nothing here blocks."""
        check_budget(rate_per_second, burst)
        now = self._clock()
        interval = 1.0 / rate_per_second

        # The wait is computed from the backlog rather than as (now + interval) - interval,
        # whose rounding at a large clock value could refuse a full bucket's first token.
        backlog = max(self._tat.get(key, now) - now, 0.0)
        wait = backlog - (burst - 1) * interval
        if wait > 0:
            return wait
        new_tat = now + backlog + interval

        if key not in self._tat and len(self._tat) >= self._sweep_at:
            self._sweep(now)
        self._tat[key] = new_tat
        return 0.0

    async def close(self) -> None:
        """Forget every bucket."""
        self._tat.clear()

    def _sweep(self, now: float) -> None:
        full = [key for key, tat in self._tat.items() if tat <= now]
        for key in full:
            del self._tat[key]
        # Sweep again only once the table has doubled, so a table of busy buckets costs
        # one pass per doubling rather than one per new key.
        self._sweep_at = max(self.max_buckets, 2 * len(self._tat))
