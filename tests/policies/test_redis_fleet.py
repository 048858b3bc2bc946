"""Throttle budgets shared through Redis by real `bizproxy serve` processes, and outages."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from bizproxy.policies.redis_store import RedisThrottleStore
from tests.support.cli_server import serve_process
from tests.support.gateway import running_gateway
from tests.support.servers import unused_port_url

REDIS_URL = os.environ.get("BIZPROXY_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(REDIS_URL is None, reason="BIZPROXY_TEST_REDIS_URL is not set")

CONFIG = """
version: 1
throttle_store:
  redis: "{redis}"
  key_prefix: "{prefix}"
  on_failure: {on_failure}
throttles:
  shared: {{rate: 20/s, burst: 5}}
  slow: {{rate: 1/min, burst: 1}}
upstreams:
  app: {{url: {upstream}}}
routes:
  - {{path: /shared, tag: shared, forward: {{upstream: app, path: /echo/shared}}}}
  - {{path: /slow, tag: slow, forward: {{upstream: app, path: /echo/slow}}}}
  - {{path: /free, forward: {{upstream: app, path: /echo/free}}}}
"""

RATE_PER_SECOND = 20
BURST = 5


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of the test's own; its keys are deleted afterwards."""
    prefix = f"bizproxy-test:{uuid.uuid4().hex}:"
    yield prefix
    if REDIS_URL is not None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=prefix + "*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def write_config(folder: Path, **values: str) -> Path:
    path = folder / "routes.yaml"
    path.write_text(CONFIG.format(**values))
    return path


async def drive(urls: list[str], *, seconds: float, clients_each: int) -> dict[str, list[int]]:
    """Send requests to each URL from a few clients for `seconds` (300 at most per client)."""
    statuses: dict[str, list[int]] = {url: [] for url in urls}
    stop_at = time.monotonic() + seconds

    async def client(url: str) -> None:
        async with httpx.AsyncClient(timeout=10) as session:
            for _ in range(300):
                if time.monotonic() >= stop_at:
                    return
                statuses[url].append((await session.get(url)).status_code)

    await asyncio.gather(*(client(url) for url in urls for _ in range(clients_each)))
    return statuses


@needs_redis
async def test_redis_fleet_two_processes_admit_one_budget_together(
    upstream_url: str, tmp_path: Path, prefix: str
) -> None:
    """Two `bizproxy serve` processes on one Redis budget together admit at most
    rate x window + burst, where each alone would admit about that much."""
    assert REDIS_URL is not None
    config = write_config(
        tmp_path, redis=REDIS_URL, prefix=prefix, on_failure="closed", upstream=upstream_url
    )
    with (
        serve_process(config, "--no-watch") as first,
        serve_process(config, "--no-watch") as second,
    ):
        urls = [f"{first.url}/shared", f"{second.url}/shared"]
        started = time.monotonic()
        statuses = await drive(urls, seconds=1.5, clients_each=3)
        window = time.monotonic() - started

    admitted = {url: answers.count(200) for url, answers in statuses.items()}
    assert all(set(answers) <= {200, 429} for answers in statuses.values())
    assert all(count > 0 for count in admitted.values())
    assert sum(admitted.values()) <= RATE_PER_SECOND * window + BURST
    assert sum(admitted.values()) >= RATE_PER_SECOND * 1.5 * 0.5


@needs_redis
def test_redis_fleet_uses_the_configured_key_prefix(
    upstream_url: str, tmp_path: Path, prefix: str
) -> None:
    """Buckets live under throttle_store.key_prefix, one key per tag and its settings."""
    assert REDIS_URL is not None
    text = CONFIG.format(redis=REDIS_URL, prefix=prefix, on_failure="closed", upstream=upstream_url)
    with running_gateway(text, tmp_path) as (url, gateway):
        assert [httpx.get(f"{url}/slow").status_code for _ in range(2)] == [200, 429]
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = sorted(key.decode() for key in client.scan_iter(match=prefix + "*"))
            ttl_ms = client.pttl(f"{prefix}slow:0.0166667/s:1")
        finally:
            client.close()
        store = gateway.table.throttle.store

    assert keys == [f"{prefix}slow:0.0166667/s:1"]
    assert 0 < ttl_ms <= 60_000
    assert isinstance(store, RedisThrottleStore)
    assert store.fallbacks_total == 0


@pytest.mark.parametrize(("on_failure", "status"), [("open", 200), ("closed", 429)])
def test_redis_fleet_outage_fails_as_configured_with_one_warning(
    upstream_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    on_failure: str,
    status: int,
) -> None:
    """With Redis unreachable, tagged requests are admitted (open) or refused (closed) as
    routes.yaml says, with one WARNING for the whole outage; untagged ones pass."""
    caplog.set_level(logging.WARNING, logger="bizproxy.throttle")
    dead = unused_port_url().replace("http://", "redis://") + "/0"
    text = CONFIG.format(redis=dead, prefix="p:", on_failure=on_failure, upstream=upstream_url)
    with running_gateway(text, tmp_path) as (url, gateway):
        tagged = [httpx.get(f"{url}/shared") for _ in range(30)]
        untagged = httpx.get(f"{url}/free")
        store = gateway.table.throttle.store

    assert [response.status_code for response in tagged] == [status] * 30
    assert untagged.status_code == 200
    if status == 429:
        assert {response.headers["retry-after"] for response in tagged} == {"1"}
    warnings = [r for r in caplog.records if r.name == "bizproxy.throttle"]
    assert len(warnings) == 1
    assert isinstance(store, RedisThrottleStore)
    assert store.outage is True
    assert store.fallbacks_total == 30
