"""Per-decision cost of ThrottleStore.take(), memory and Redis, against a no-op baseline.

    python bench/throttle_bench.py [--decisions 20000] [--tasks 32] [--redis URL]
                                   [--requests 2000]

The baseline is one `await asyncio.sleep(0)` per decision, measured in the same run, so
the ratio says how many event-loop round trips a decision costs. Redis is measured when
`--redis` or BIZPROXY_TEST_REDIS_URL gives a server; its keys are deleted afterwards.

Then whole gateway requests: a forward route with a throttle tag against the same route
without one, each store in turn, to a tiny upstream on 127.0.0.1 in the same process.
The gateway is called as an ASGI app (no inbound HTTP) on uvloop, as it is served, so
the ratio shows what the decision adds to the rest of a request's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import redis.asyncio as redis
import uvicorn
import uvloop

from bizproxy.gateway import Gateway
from bizproxy.policies.redis_store import RedisThrottleStore
from bizproxy.policies.throttle_store import MemoryThrottleStore, ThrottleStore
from bizproxy.runtime import load_gateway

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


GATEWAY_CONFIG = """
version: 1
throttle_store: {store}
throttles:
  bench: {{rate: 1000000/s, burst: 1000000}}
upstreams:
  app: {{url: "{upstream}", retry: once}}
retry_policies:
  once: {{attempts: 1}}
routes:
  - {{path: /tagged, tag: bench, forward: {{upstream: app, path: /}}}}
  - {{path: /plain, forward: {{upstream: app, path: /}}}}
"""


async def tiny_upstream(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def call_gateway(gateway: Gateway, path: str) -> None:
    """One GET through the gateway's ASGI interface, its answer read to the end."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
    }
    requested = False
    never = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await gateway(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"GET {path} through the gateway answered {status}")


def requester(gateway: Gateway, path: str) -> Decide:
    async def request(number: int) -> None:
        await call_gateway(gateway, path)

    return request


async def gateway_rows(requests: int, redis_url: str | None) -> list[Row]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    upstream = uvicorn.Server(uvicorn.Config(tiny_upstream, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(upstream.serve(sockets=[sock]))
    while not upstream.started:
        await asyncio.sleep(0.01)
    stores = {"memory": "memory"}
    prefix = f"bizproxy-bench:{uuid.uuid4().hex}:"
    if redis_url:
        stores["redis"] = f'{{redis: "{redis_url}", key_prefix: "{prefix}", on_failure: closed}}'
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            for name, store in stores.items():
                path = Path(folder) / "routes.yaml"
                upstream_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
                path.write_text(GATEWAY_CONFIG.format(store=store, upstream=upstream_url))
                async with load_gateway(path) as gateway:
                    for route in ("/plain", "/tagged", "/plain", "/tagged"):
                        seconds = await sequential(requester(gateway, route), requests)
                        rows.append((name, route, seconds))
    finally:
        upstream.should_exit = True
        await serving
        sock.close()
        if redis_url:
            await delete_prefix(redis_url, prefix)
    return rows


def print_gateway_rows(rows: list[Row], requests: int) -> None:
    # Each route ran twice, alternating; the second run of each is reported.
    best = {(name, route): seconds for name, route, seconds in rows}
    print(f"\n{requests} gateway requests each; ratio = tagged / plain with the same store")
    print(f"{'store':<20}{'plain µs':>12}{'tagged µs':>12}{'ratio':>9}")
    for name in dict.fromkeys(name for name, _, _ in rows):
        plain = best[(name, "/plain")] / requests * 1e6
        tagged = best[(name, "/tagged")] / requests * 1e6
        print(f"{name:<20}{plain:>12.1f}{tagged:>12.1f}{tagged / plain:>9.2f}")


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
    parser.add_argument("--requests", type=int, default=2000, help="0 skips the gateway part")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.decisions, arguments.tasks, arguments.redis))
    if arguments.requests:
        # uvloop, as `bizproxy serve` runs: uvicorn on the default loop adds about 40 ms
        # to every request on loopback, which would hide everything else.
        rows = uvloop.run(gateway_rows(arguments.requests, arguments.redis))
        print_gateway_rows(rows, arguments.requests)
