from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from bizproxy.policies.redis_store import TAKE_SCRIPT_SHA, RedisThrottleStore
from bizproxy.policies.throttle_store import MemoryThrottleStore, ThrottleStore
from tests.policies import shared_budget_worker
from tests.policies.redis_server import REDIS_SERVER, RedisServer, redis_server
from tests.support.servers import serve_raw, unused_port_url

REDIS_URL = os.environ.get("BIZPROXY_TEST_REDIS_URL")
ROOT = Path(__file__).resolve().parents[2]

needs_redis = pytest.mark.skipif(REDIS_URL is None, reason="BIZPROXY_TEST_REDIS_URL is not set")
needs_redis_binary = pytest.mark.skipif(
    REDIS_URL is None or REDIS_SERVER is None,
    reason="BIZPROXY_TEST_REDIS_URL is not set, or redis-server is not installed",
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def admitted_within_bound(times: list[float], rate: float, burst: int) -> bool:
    """True when no window [times[i], times[j]] holds more than rate * width + burst."""
    return all(
        j - i + 1 <= rate * (times[j] - times[i]) + burst
        for i in range(len(times))
        for j in range(i, len(times))
    )


async def test_memory_store_is_a_throttle_store() -> None:
    """The memory store satisfies the ThrottleStore protocol."""
    assert isinstance(MemoryThrottleStore(), ThrottleStore)


async def test_memory_store_admits_burst_then_refuses() -> None:
    """A fresh bucket admits `burst` takes at once, then refuses."""
    store = MemoryThrottleStore(clock=FakeClock())

    results = [await store.take("orders", 4.0, 5) for _ in range(6)]

    assert results[:5] == [0.0] * 5
    assert results[5] == pytest.approx(0.25)


async def test_memory_store_retry_after_is_time_to_next_token() -> None:
    """A refusal says how long until a token; after that long, a take is admitted."""
    clock = FakeClock()
    store = MemoryThrottleStore(clock=clock)
    await store.take("orders", 4.0, 1)

    clock.advance(0.1)
    wait_seconds = await store.take("orders", 4.0, 1)
    clock.advance(wait_seconds)

    assert wait_seconds == pytest.approx(0.15)
    assert await store.take("orders", 4.0, 1) == 0.0


async def test_memory_store_refusal_consumes_nothing() -> None:
    """Refused takes leave the bucket as it was."""
    clock = FakeClock()
    store = MemoryThrottleStore(clock=clock)
    await store.take("orders", 2.0, 1)
    for _ in range(100):
        await store.take("orders", 2.0, 1)

    clock.advance(0.5)

    assert await store.take("orders", 2.0, 1) == 0.0


async def test_memory_store_admits_rate_times_window_plus_burst() -> None:
    """Hammered for 10 s on a 1/64 s tick, the bucket admits exactly rate * 10 + burst."""
    clock = FakeClock()
    store = MemoryThrottleStore(clock=clock)
    times: list[float] = []
    for _ in range(641):
        for _ in range(3):
            if await store.take("orders", 8.0, 4) == 0.0:
                times.append(clock.now)
        clock.advance(1 / 64)

    assert len(times) == 8 * 10 + 4
    assert admitted_within_bound(times, 8.0, 4)


async def test_memory_store_bound_holds_under_random_timing() -> None:
    """At random moments, no window ever holds more than rate * width + burst."""
    clock = FakeClock()
    store = MemoryThrottleStore(clock=clock)
    chance = random.Random(20240611)
    times: list[float] = []
    for _ in range(3000):
        clock.advance(chance.expovariate(30.0))
        if await store.take("orders", 7.3, 3) == 0.0:
            times.append(clock.now)

    elapsed = clock.now - 1000.0
    assert len(times) >= 7.3 * elapsed * 0.95
    assert admitted_within_bound(times, 7.3, 3)


async def test_memory_store_keys_are_independent() -> None:
    """Each key has its own bucket."""
    store = MemoryThrottleStore(clock=FakeClock())
    await store.take("orders", 1.0, 1)

    assert await store.take("orders", 1.0, 1) > 0
    assert await store.take("invoices", 1.0, 1) == 0.0


async def test_memory_store_sheds_full_buckets_when_large() -> None:
    """Past max_buckets, buckets that are full again are dropped; busy ones are kept."""
    clock = FakeClock()
    store = MemoryThrottleStore(clock=clock, max_buckets=100)
    await store.take("busy", 0.001, 1)
    for number in range(1000):
        await store.take(f"client-{number}", 100.0, 1)
        clock.advance(0.02)

    assert len(store) <= 101
    assert await store.take("busy", 0.001, 1) > 0


async def test_memory_store_rejects_impossible_budget() -> None:
    """A rate of zero or a burst below one is a programming error."""
    store = MemoryThrottleStore()

    with pytest.raises(ValueError, match="rate_per_second must be positive"):
        await store.take("orders", 0.0, 1)
    with pytest.raises(ValueError, match="burst must be at least 1"):
        await store.take("orders", 1.0, 0)


@contextlib.asynccontextmanager
async def prefixed_store(url: str, **options: object) -> AsyncIterator[RedisThrottleStore]:
    """A Redis store under a prefix of its own; its keys are deleted afterwards."""
    prefix = f"bizproxy-test:{uuid.uuid4().hex}:"
    store = RedisThrottleStore(url, key_prefix=prefix, **options)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        await store.close()
        await delete_prefix(url, prefix)


async def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@needs_redis
async def test_redis_store_admits_rate_times_window_plus_burst() -> None:
    """Against a real server clock, takes over a second stay within rate * window + burst."""
    assert REDIS_URL is not None
    async with prefixed_store(REDIS_URL) as store:
        admitted = 0
        start = time.time()
        while time.time() < start + 1.0:
            if await store.take("orders", 20.0, 4) == 0.0:
                admitted += 1
            await asyncio.sleep(0.002)
        elapsed = time.time() - start

    assert admitted <= 20.0 * elapsed + 4
    assert admitted >= 20.0 * elapsed + 4 - 3
    assert store.fallbacks_total == 0


@needs_redis
async def test_redis_store_retry_after_and_key_expiry() -> None:
    """A refusal gives the wait for one token; the bucket's key expires once it is full."""
    assert REDIS_URL is not None
    async with prefixed_store(REDIS_URL) as store:
        assert [await store.take("orders", 2.0, 2) for _ in range(2)] == [0.0, 0.0]
        wait_seconds = await store.take("orders", 2.0, 2)

        client = redis.Redis.from_url(REDIS_URL)
        ttl_ms = await client.pttl(store.key_prefix + "orders")
        await client.aclose()

    assert 0.4 < wait_seconds <= 0.5
    assert 0 < ttl_ms <= 1000


@needs_redis
def test_redis_store_two_processes_share_one_budget() -> None:
    """Two OS processes on one bucket together admit at most rate * window + burst."""
    assert REDIS_URL is not None
    prefix = f"bizproxy-test:{uuid.uuid4().hex}:"
    start_at = time.time() + 1.5
    command = [sys.executable, "-m", "tests.policies.shared_budget_worker", REDIS_URL, prefix]
    command += ["orders", str(start_at), "1.5"]
    environment = os.environ | {"PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        reports = [json.loads(worker.communicate(timeout=30)[0]) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
        asyncio.run(delete_prefix(REDIS_URL, prefix))

    rate, burst = shared_budget_worker.RATE_PER_SECOND, shared_budget_worker.BURST
    window = max(r["last"] for r in reports) - min(r["first"] for r in reports)
    total = sum(r["admitted"] for r in reports)
    assert all(r["admitted"] > 0 and r["fallbacks"] == 0 for r in reports)
    assert total <= rate * window + burst
    assert total >= rate * 1.5 * 0.8


def throttle_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bizproxy.throttle" and r.levelno == level]


def dead_redis_url() -> str:
    return unused_port_url().replace("http://", "redis://") + "/0"


async def test_redis_store_fails_open_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """With nothing listening, an 'open' store admits and warns once for many calls."""
    caplog.set_level(logging.INFO, logger="bizproxy.throttle")
    clock = FakeClock()
    store = RedisThrottleStore(dead_redis_url(), on_failure="open", clock=clock)
    try:
        results = [await store.take("orders", 1.0, 1) for _ in range(50)]
        clock.advance(1.5)
        results += [await store.take("orders", 1.0, 1) for _ in range(50)]
    finally:
        await store.close()

    assert results == [0.0] * 100
    assert store.outage is True
    assert store.failures_total == 2
    assert store.fallbacks_total == 100
    warnings = throttle_records(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "failed (ConnectionError" in warnings[0].getMessage()
    assert "admitting" in warnings[0].getMessage()


async def test_redis_store_fails_closed_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With nothing listening, a 'closed' store refuses with a retry-after and warns once."""
    caplog.set_level(logging.INFO, logger="bizproxy.throttle")
    store = RedisThrottleStore(dead_redis_url(), on_failure="closed")
    try:
        results = [await store.take("orders", 1.0, 1) for _ in range(50)]
    finally:
        await store.close()

    assert results == [1.0] * 50
    assert len(throttle_records(caplog, logging.WARNING)) == 1
    assert "refusing" in throttle_records(caplog, logging.WARNING)[0].getMessage()


async def test_redis_store_warning_hides_url_password(caplog: pytest.LogCaptureFixture) -> None:
    """The outage warning names host, port and db, never the URL's password."""
    caplog.set_level(logging.INFO, logger="bizproxy.throttle")
    url = dead_redis_url().replace("redis://", "redis://user:hunter2@")
    store = RedisThrottleStore(url)
    try:
        await store.take("orders", 1.0, 1)
    finally:
        await store.close()

    message = throttle_records(caplog, logging.WARNING)[0].getMessage()
    assert "hunter2" not in message
    assert store.server in message
    assert "hunter2" not in repr(store)


async def _swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await reader.read()
    writer.close()


async def test_redis_store_hung_server_costs_one_timeout() -> None:
    """A server that accepts but never answers delays a take by about the timeout only."""
    with serve_raw(_swallow) as url:
        store = RedisThrottleStore(url.replace("http://", "redis://"), timeout_seconds=0.2)
        try:
            started = time.monotonic()
            first = await store.take("orders", 1.0, 1)
            first_seconds = time.monotonic() - started
            started = time.monotonic()
            for _ in range(20):
                await store.take("orders", 1.0, 1)
            rest_seconds = time.monotonic() - started
        finally:
            await store.close()

    assert first == 0.0
    assert first_seconds < 1.0
    assert rest_seconds < 0.05
    assert store.failures_total == 1


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server process of this test's own, which the test may stop and restart."""
    with redis_server() as server:
        yield server


@needs_redis_binary
async def test_redis_store_recovers_when_server_returns(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """After an outage the store reconnects by itself, logging one WARNING and one INFO."""
    caplog.set_level(logging.INFO, logger="bizproxy.throttle")
    clock = FakeClock()
    store = RedisThrottleStore(own_redis.url, on_failure="closed", clock=clock)
    try:
        assert await store.take("orders", 100.0, 1) == 0.0

        own_redis.stop()
        during = [await store.take("orders", 100.0, 1) for _ in range(20)]
        outage_seen = store.outage

        own_redis.start()
        clock.advance(1.5)
        after = await store.take("orders", 100.0, 1)
    finally:
        await store.close()

    assert during == [1.0] * 20
    assert outage_seen is True
    assert after == 0.0
    assert store.outage is False
    assert len(throttle_records(caplog, logging.WARNING)) == 1
    infos = throttle_records(caplog, logging.INFO)
    assert len(infos) == 1
    assert "answers again" in infos[0].getMessage()


@needs_redis_binary
async def test_redis_store_reloads_script_after_flush(own_redis: RedisServer) -> None:
    """When the server forgets the script (NOSCRIPT), the store loads it again."""
    store = RedisThrottleStore(own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert await store.take("orders", 100.0, 1) == 0.0
        assert await client.script_exists(TAKE_SCRIPT_SHA) == [True]

        await client.script_flush()
        await asyncio.sleep(0.02)

        assert await store.take("orders", 100.0, 1) == 0.0
        assert store.failures_total == 0
    finally:
        await store.close()
        await client.aclose()


@pytest.mark.parametrize(
    "clock_value", [1.0, 4092.2559906841902, 16342.204153625416, 65483.98140820866]
)
def test_memory_store_admits_a_full_buckets_first_token_at_any_clock_value(
    clock_value: float,
) -> None:
    """A budget of 1/min with burst 1 admits its first request whatever the clock reads
    (rounding of now + interval - interval once refused it)."""
    store = MemoryThrottleStore(clock=lambda: clock_value)
    assert store.take_now("t", 1 / 60, 1) == 0.0
    assert store.take_now("t", 1 / 60, 1) == pytest.approx(60.0)
