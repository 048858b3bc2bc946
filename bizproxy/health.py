"""Active health checks: one background task per proxy probes each of its targets.

A target turns unhealthy after `unhealthy` failed probes in a row and healthy again
after `healthy` good ones; a good streak also ends a passive ejection early. The task
starts when the proxy connects and is cancelled and awaited when it disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass

from bizproxy.targets import Target, TargetSet

logger = logging.getLogger("bizproxy.health")


@dataclass(frozen=True)
class HealthCheck:
    """GET `path` on every target each `interval_seconds`; a 2xx within the timeout is good."""

    path: str = "/healthz"
    interval_seconds: float = 5.0
    timeout_seconds: float = 1.0
    healthy: int = 2
    unhealthy: int = 3


class HealthChecker:
    """Probes one proxy's targets until stopped."""

    def __init__(self, check: HealthCheck, targets: TargetSet) -> None:
        self.check = check
        self.targets = targets
        self._good: Counter[int] = Counter()
        self._bad: Counter[int] = Counter()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            name = f"bizproxy health checks of {self.targets.upstream!r}"
            self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(target) for target in self.targets.targets))
            await asyncio.sleep(self.check.interval_seconds)

    async def _probe(self, target: Target) -> None:
        problem = await self._problem(target)
        key = id(target)
        upstream = self.targets.upstream
        if problem is None:
            self._bad[key] = 0
            self._good[key] += 1
            if self._good[key] >= self.check.healthy and target.state != "healthy":
                target.recover(f"{self._good[key]} health checks passed", upstream=upstream)
            return
        self._good[key] = 0
        self._bad[key] += 1
        logger.debug("health check of %s on %r failed: %s", target.label, upstream, problem)
        if self._bad[key] >= self.check.unhealthy:
            reason = f"{self._bad[key]} health checks failed in a row, last: {problem}"
            target.mark_unhealthy(reason, upstream=upstream)

    async def _problem(self, target: Target) -> str | None:
        """What was wrong with one probe, or None when it passed."""
        seconds = self.check.timeout_seconds
        timeouts: dict[str, float | None] = {
            "connect": seconds,
            "read": seconds,
            "write": seconds,
            "pool": seconds,
        }
        request = target.send("GET", f"{target.url}{self.check.path}", [], None, timeouts)
        try:
            async with asyncio.timeout(seconds):
                response = await request
                await response.aclose()
        except TimeoutError:
            return f"no answer within {seconds:.3f}s"
        except Exception as error:  # every failure to answer is a failed probe
            return f"{type(error).__name__}: {error}"
        if not 200 <= response.status_code < 300:
            return f"status {response.status_code}"
        return None
