"""Take from one Redis bucket as fast as allowed for a while; print what was admitted.

Run as a separate OS process by the shared-budget test:
    python -m tests.policies.shared_budget_worker URL PREFIX KEY START_AT DURATION
START_AT is a unix time, so that every worker begins together.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bizproxy.policies.redis_store import RedisThrottleStore

RATE_PER_SECOND = 50.0
BURST = 10
PAUSE_SECONDS = 0.002


async def main(url: str, prefix: str, key: str, start_at: float, duration: float) -> None:
    store = RedisThrottleStore(url, key_prefix=prefix, on_failure="closed")
    admitted = 0
    calls = 0
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        first = time.time()
        while time.time() < first + duration:
            if await store.take(key, RATE_PER_SECOND, BURST) == 0.0:
                admitted += 1
            calls += 1
            await asyncio.sleep(PAUSE_SECONDS)
        last = time.time()
    finally:
        await store.close()
    report = {"admitted": admitted, "calls": calls, "first": first, "last": last}
    report["fallbacks"] = store.fallbacks_total
    print(json.dumps(report))


if __name__ == "__main__":
    url, prefix, key, start_at, duration = sys.argv[1:6]
    asyncio.run(main(url, prefix, key, float(start_at), float(duration)))
