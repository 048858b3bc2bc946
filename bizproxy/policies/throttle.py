"""Throttle budgets by tag: admit a request, make it wait for a token, or refuse it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from bizproxy.errors import Throttled
from bizproxy.interface import ThrottlePluginCallable
from bizproxy.policies.throttle_store import ThrottleStore


class Throttle(Protocol):
    """What the proxy asks before each request: admit it, or raise Throttled."""

    async def admit(self, tag: str | None, client_key: str | None = None) -> None: ...


@dataclass(frozen=True)
class Budget:
    """One tag's declared budget."""

    tag: str
    rate_per_second: float
    burst: int
    on_exceed: Literal["reject", "wait"] = "reject"
    max_wait_seconds: float = 0.0
    per: str | None = None
    """None for one bucket per tag; 'client' or 'header:NAME' for one bucket per client."""

    @property
    def bucket_key(self) -> str:
        """The token bucket's name: a budget whose rate or burst changes (on a reload)
        starts a fresh bucket, while an unchanged one keeps what was spent."""
        return f"{self.tag}:{self.rate_per_second:g}/s:{self.burst}"

    @property
    def policy_header(self) -> str:
        """The IETF RateLimit-Policy value: quota per window, one second scaled up to whole."""
        window = 1
        while self.rate_per_second * window < 1:
            window *= 60
        quota = max(self.burst, round(self.rate_per_second * window))
        return f'"{self.tag}";q={quota};w={window}'


@dataclass(frozen=True)
class PluginThrottle:
    """A throttle that asks a Python callable `(tag) -> bool`, sync or async."""

    allows: ThrottlePluginCallable

    async def admit(self, tag: str | None, client_key: str | None = None) -> None:
        verdict = self.allows(tag)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if not verdict:
            raise Throttled(f"throttle plug-in refused tag {tag!r}", tag=tag, retry_after=None)


class BudgetThrottle:
    """Budgets by tag over a token store; tags without a budget are not throttled."""

    def __init__(
        self,
        budgets: Mapping[str, Budget],
        store: ThrottleStore,
        plugins: Mapping[str, Throttle] | None = None,
    ) -> None:
        self.budgets = dict(budgets)
        self.store = store
        self.plugins = dict(plugins or {})

    async def admit(self, tag: str | None, client_key: str | None = None) -> None:
        if tag is None:
            return
        plugin = self.plugins.get(tag)
        if plugin is not None:
            await plugin.admit(tag, client_key)
            return
        budget = self.budgets.get(tag)
        if budget is None:
            return
        key = (
            budget.bucket_key
            if budget.per is None or client_key is None
            else (f"{budget.bucket_key}:{client_key}")
        )
        deadline = time.monotonic() + budget.max_wait_seconds
        while True:
            wait_seconds = await self.store.take(key, budget.rate_per_second, budget.burst)
            if wait_seconds <= 0:
                return
            remaining = deadline - time.monotonic()
            if budget.on_exceed != "wait" or wait_seconds > remaining:
                raise Throttled(
                    f"over the throttle budget for tag {tag!r} ({budget.policy_header})",
                    tag=tag,
                    retry_after=wait_seconds,
                )
            await asyncio.sleep(wait_seconds)


def as_throttle(throttler: Throttle | ThrottlePluginCallable | None) -> Throttle | None:
    """Accept a throttle object, a seed-style callable `(tag) -> bool`, or None."""
    if throttler is None:
        return None
    if hasattr(throttler, "admit"):
        return throttler
    if callable(throttler):
        return PluginThrottle(throttler)
    raise TypeError(f"expected a throttle or a callable (tag) -> bool, got {throttler!r}")
