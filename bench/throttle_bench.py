"""Per-decision cost of ThrottleStore.take(), memory and Redis, against a no-op baseline.

    python bench/throttle_bench.py [--decisions 20000] [--tasks 32] [--redis URL]

The baseline is one `await asyncio.sleep(0)` per decision, measured in the same run, so
the ratio says how many event-loop round trips a decision costs. Redis is measured when
`--redis` or BIZPROXY_TEST_REDIS_URL gives a server; its keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as redis

from bizproxy.policies.redis_store import RedisThrottleStore
from bizproxy.policies.throttle_store import MemoryThrottleStore, ThrottleStore

Decide = Callable[[int], Awaitable[object]]
Row = tuple[str, str, float]

KEYS = [f"tag-{number}" for number in range(100)]
# Generous enough that every decision is an admission, the path that writes.
RATE_PER_SECOND = 1e6
BURST = 1_000_000


async def sequential(decide: Decide, decisions: int) -> float:
    started = time.perf_counter()
    for number in range(decisions):
        await decide(number)
    return time.perf_counter() - started


async def concurrent(decide: Decide, decisions: int, tasks: int) -> float:
    share = decisions // tasks  # main() makes decisions a multiple of tasks

    async def worker(offset: int) -> None:
        for number in range(offset, offset + share):
            await decide(number)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t * share) for t in range(tasks)))
    return time.perf_counter() - started


async def noop(number: int) -> None:
    await asyncio.sleep(0)


def taker(store: ThrottleStore) -> Decide:
    async def decide(number: int) -> float:
        return await store.take(KEYS[number % len(KEYS)], RATE_PER_SECOND, BURST)

    return decide


async def measure(name: str, decide: Decide, decisions: int, tasks: int) -> list[Row]:
    await sequential(decide, min(decisions, 1000))  # warm up: connections, script load
    seq = await sequential(decide, decisions)
    con = await concurrent(decide, decisions, tasks)
    return [(name, "sequential", seq), (name, f"{tasks} tasks", con)]


async def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def main(decisions: int, tasks: int, redis_url: str | None) -> None:
    decisions -= decisions % tasks
    rows = await measure("baseline sleep(0)", noop, decisions, tasks)
    rows += await measure("memory", taker(MemoryThrottleStore()), decisions, tasks)

    if redis_url:
        prefix = f"bizproxy-bench:{uuid.uuid4().hex}:"
        store = RedisThrottleStore(redis_url, key_prefix=prefix, on_failure="closed")
        try:
            rows += await measure("redis", taker(store), decisions, tasks)
            if store.fallbacks_total:
                print(f"warning: {store.fallbacks_total} decisions fell back; Redis failed")
        finally:
            await store.close()
            await delete_prefix(redis_url, prefix)

    baseline = {mode: seconds for name, mode, seconds in rows if name.startswith("baseline")}
    print(f"{decisions} decisions each; ratio = cost / baseline of the same mode")
    print(f"{'store':<20}{'mode':<14}{'µs/decision':>12}{'ratio':>9}")
    for name, mode, seconds in rows:
        micros = seconds / decisions * 1e6
        ratio = seconds / baseline[mode]
        print(f"{name:<20}{mode:<14}{micros:>12.2f}{ratio:>9.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--redis", default=os.environ.get("BIZPROXY_TEST_REDIS_URL"))
    arguments = parser.parse_args()
    asyncio.run(main(arguments.decisions, arguments.tasks, arguments.redis))
