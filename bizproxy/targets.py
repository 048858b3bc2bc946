"""The targets of one upstream: which one takes the next attempt, and which are ejected.

A `Target` is one server and its connection pool; its health outlives a reload that
keeps it. A `TargetSet` is one proxy's view of its targets: weights, the balancing
rule, per-target breakers and the passive health policy.

    healthy ──N failures in a row──► ejected ──cooldown──► probing ──success──► healthy
                                        ▲                     │
                                        └──────failure────────┘  (cooldown doubles, capped)

Active health checks (`bizproxy.health`) mark a target unhealthy or healthy on their own.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from bizproxy.errors import (
    BusinessProxyException,
    ConnectionFailure,
    NoHealthyTarget,
    UpstreamError,
)
from bizproxy.http1 import Http1Transport
from bizproxy.policies.breaker import CircuitBreaker

logger = logging.getLogger("bizproxy.health")

Balance = Literal["round-robin", "least-requests", "random"]
TargetState = Literal["healthy", "ejected", "probing", "unhealthy"]
TARGET_STATES: tuple[TargetState, ...] = ("healthy", "ejected", "probing", "unhealthy")


@dataclass(frozen=True)
class OutlierPolicy:
    """Passive health: eject after `failures` failures in a row, for a growing cooldown."""

    failures: int = 5
    cooldown_seconds: float = 10.0
    max_cooldown_seconds: float = 300.0
    max_ejected_share: float = 0.5

    def cooldown_for(self, ejections: int) -> float:
        """The cooldown of the `ejections`-th ejection in a row: doubled each time, capped."""
        growth: float = 2.0 ** (ejections - 1)
        return min(self.cooldown_seconds * growth, self.max_cooldown_seconds)

    def max_ejected(self, targets: int) -> int:
        """How many of `targets` may be ejected at once; at least one when the share is set."""
        if self.max_ejected_share <= 0:
            return 0
        return max(1, math.floor(self.max_ejected_share * targets + 1e-9))


def display_url(url: str) -> str:
    """The URL without credentials, for logs, labels and the table endpoint."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class Target:
    """One server of an upstream, its connection pool and its health."""

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.AsyncBaseTransport,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.label = display_url(self.url)
        self.transport = transport
        self._clock = clock
        self._holders = 0
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ejections_in_a_row = 0
        self.ejected_until: float | None = None
        self.unhealthy = False
        self.last_ejection_reason: str | None = None
        self.last_ejected_at: float | None = None
        """Wall-clock seconds of the last ejection, for the table endpoint."""
        self.recovered_at: float | None = None

    def __repr__(self) -> str:
        return f"<Target {self.label} {self.state}>"

    # -- pool ownership: several proxies may share a target during a reload -----------

    @property
    def holders(self) -> int:
        """How many connected proxies use this target's pool."""
        return self._holders

    def acquire(self) -> None:
        self._holders += 1

    async def release(self) -> None:
        """Close the pool once no proxy holds the target any more."""
        self._holders -= 1
        if self._holders == 0:
            await self.transport.aclose()

    def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        content: Any,
        timeout: dict[str, float | None],
    ) -> Awaitable[httpx.Response]:
        """One request on this target's pool, up to the answer's headers."""
        transport = self.transport
        if isinstance(transport, Http1Transport):
            return transport.send(method, url, headers, content, timeout)
        request = httpx.Request(
            method, url, headers=headers, content=content, extensions={"timeout": timeout}
        )
        return transport.handle_async_request(request)

    # -- health ------------------------------------------------------------------------

    @property
    def state(self) -> TargetState:
        if self.unhealthy:
            return "unhealthy"
        if self.ejected_until is None:
            return "healthy"
        return "probing" if self._clock() >= self.ejected_until else "ejected"

    def cooldown_left_seconds(self) -> float:
        if self.ejected_until is None:
            return 0.0
        return max(0.0, self.ejected_until - self._clock())

    def forget_ejections_after(self, seconds: float) -> None:
        """Start the cooldowns from the shortest again once healthy for `seconds`."""
        healthy_since = self.recovered_at
        if healthy_since is not None and self._clock() - healthy_since >= seconds:
            self.ejections_in_a_row = 0
            self.recovered_at = None

    @property
    def available(self) -> bool:
        return self.state in ("healthy", "probing")

    def eject(self, reason: str, cooldown_seconds: float, *, upstream: str) -> None:
        self.ejections_in_a_row += 1
        self.ejected_until = self._clock() + cooldown_seconds
        self.last_ejection_reason = reason
        self.last_ejected_at = time.time()
        logger.warning(
            "upstream %r ejected target %s for %.1fs (ejection %d in a row): %s",
            upstream,
            self.label,
            cooldown_seconds,
            self.ejections_in_a_row,
            reason,
        )

    def recover(self, how: str, *, upstream: str) -> None:
        was = self.state
        self.ejected_until = None
        self.unhealthy = False
        self.consecutive_failures = 0
        self.recovered_at = self._clock()
        if was != "healthy":
            logger.info("upstream %r target %s is healthy again: %s", upstream, self.label, how)

    def mark_unhealthy(self, reason: str, *, upstream: str) -> None:
        if self.unhealthy:
            return
        self.unhealthy = True
        self.last_ejection_reason = reason
        self.last_ejected_at = time.time()
        logger.warning("upstream %r marked target %s unhealthy: %s", upstream, self.label, reason)

    def describe(self) -> dict[str, object]:
        return {
            "url": self.label,
            "state": self.state,
            "in_flight": self.in_flight,
            "consecutive_failures": self.consecutive_failures,
            "ejections_in_a_row": self.ejections_in_a_row,
            "last_ejection": (
                None
                if self.last_ejection_reason is None
                else {"reason": self.last_ejection_reason, "at": self.last_ejected_at}
            ),
        }


def new_target(
    url: str, *, max_connections: int, max_keepalive: int | None, keepalive_expiry_seconds: float
) -> Target:
    """A target with its own connection pool."""
    transport = Http1Transport(
        max_connections=max_connections,
        max_keepalive=max_keepalive,
        keepalive_expiry_seconds=keepalive_expiry_seconds,
    )
    return Target(url, transport=transport)


@dataclass(eq=False)
class _Entry:
    target: Target
    weight: int
    breaker: CircuitBreaker | None
    current: float = 0.0
    """The smooth weighted round-robin counter."""


@dataclass(eq=False)
class TargetSet:
    """One proxy's targets: picks the target of each attempt and learns from its outcome."""

    upstream: str
    entries: list[_Entry]
    balance: Balance = "round-robin"
    outlier: OutlierPolicy | None = None
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def of(
        cls,
        upstream: str,
        targets: Sequence[tuple[Target, int, CircuitBreaker | None]],
        *,
        balance: Balance = "round-robin",
        outlier: OutlierPolicy | None = None,
    ) -> TargetSet:
        entries = [_Entry(target, weight, breaker) for target, weight, breaker in targets]
        return cls(upstream, entries, balance, outlier)

    @property
    def targets(self) -> list[Target]:
        return [entry.target for entry in self.entries]

    def by_url(self, url: str) -> Target | None:
        return next((e.target for e in self.entries if e.target.url == url.rstrip("/")), None)

    def breaker_of(self, target: Target) -> CircuitBreaker | None:
        return next((e.breaker for e in self.entries if e.target is target), None)

    def describe(self) -> list[dict[str, object]]:
        """Each target's live state, for the operational table endpoint."""
        return [{**e.target.describe(), "weight": e.weight} for e in self.entries]

    # -- choosing ----------------------------------------------------------------------

    def pick(self, avoid: Target | None = None) -> Target:
        """The target of the next attempt; another than `avoid` when there is one."""
        if len(self.entries) == 1:
            only = self.entries[0].target
            if not only.available:
                raise self._none_healthy()
            return only
        candidates = [e for e in self.entries if self._usable(e)]
        if not candidates:
            raise self._none_healthy()
        if avoid is not None and len(candidates) > 1:
            candidates = [e for e in candidates if e.target is not avoid] or candidates
        if self.balance == "least-requests":
            chosen = self._least_requests(candidates)
        elif self.balance == "random":
            chosen = self.rng.choices(candidates, [e.weight for e in candidates])[0]
        else:
            chosen = self._round_robin(candidates)
        return chosen.target

    def _usable(self, entry: _Entry) -> bool:
        breaker_open = entry.breaker is not None and entry.breaker.state == "open"
        return entry.target.available and not breaker_open

    def _round_robin(self, candidates: list[_Entry]) -> _Entry:
        # Smooth weighted round-robin: over any window of sum(weights) picks, each
        # candidate gets exactly its weight, interleaved rather than in runs.
        total = 0
        for entry in candidates:
            entry.current += entry.weight
            total += entry.weight
        chosen = max(candidates, key=lambda e: e.current)
        chosen.current -= total
        return chosen

    def _least_requests(self, candidates: list[_Entry]) -> _Entry:
        # Two random choices by weight, the less loaded wins: near-optimal without
        # herding every request onto the one target that just went idle.
        first, second = self.rng.choices(candidates, [e.weight for e in candidates], k=2)
        return min(first, second, key=lambda e: e.target.in_flight / e.weight)

    def _none_healthy(self) -> NoHealthyTarget:
        waits = [t.cooldown_left_seconds() for t in self.targets if t.ejected_until]
        retry_after = max(1.0, min(waits)) if waits else 1.0
        states = ", ".join(f"{t.label} {t.state}" for t in self.targets)
        return NoHealthyTarget(
            f"upstream {self.upstream!r} has no healthy target ({states})",
            upstream=self.upstream,
            retry_after=retry_after,
        )

    # -- learning ----------------------------------------------------------------------

    def before_request(self, target: Target) -> bool:
        """Raise CircuitOpen when the target's breaker refuses the attempt; True when the
        attempt is the breaker's probe (which `release_probe` hands back if it is lost)."""
        breaker = self.breaker_of(target)
        return breaker.before_request() if breaker is not None else False

    def release_probe(self, target: Target) -> None:
        """The probe ended without an answer either way (cancelled): let another through."""
        breaker = self.breaker_of(target)
        if breaker is not None:
            breaker.release_probe()

    def record(
        self, target: Target, *, success: bool, failure: BusinessProxyException | None = None
    ) -> None:
        """Count the outcome of one attempt; eject the target when the policy says so."""
        condition = _condition(failure)
        breaker = self.breaker_of(target)
        if breaker is not None:
            if success:
                breaker.record_success()
            else:
                breaker.record_failure()
        if success:
            if target.state == "probing":
                target.recover("a request succeeded after the cooldown", upstream=self.upstream)
                return
            target.consecutive_failures = 0
            if self.outlier is not None:
                target.forget_ejections_after(self.outlier.max_cooldown_seconds)
            return
        target.consecutive_failures += 1
        policy = self.outlier
        if policy is None:
            return
        if target.state == "probing":
            self._eject(target, policy, f"the probe after the cooldown failed ({condition})")
        elif target.state == "healthy" and target.consecutive_failures >= policy.failures:
            reason = f"{target.consecutive_failures} failures in a row, last {condition}"
            self._eject(target, policy, reason)

    def _eject(self, target: Target, policy: OutlierPolicy, reason: str) -> None:
        others = [t for t in self.targets if t is not target and not t.available]
        if target.state != "probing" and len(others) >= policy.max_ejected(len(self.entries)):
            logger.debug(
                "upstream %r keeps target %s: %d of %d targets are already ejected",
                self.upstream,
                target.label,
                len(others),
                len(self.entries),
            )
            return
        target.eject(
            reason,
            policy.cooldown_for(target.ejections_in_a_row + 1),
            upstream=self.upstream,
        )


def _condition(failure: BusinessProxyException | None) -> str:
    if isinstance(failure, ConnectionFailure):
        return failure.kind
    if isinstance(failure, UpstreamError):
        return f"status {failure.status}"
    return type(failure).__name__ if failure is not None else "unknown"
