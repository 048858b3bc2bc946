"""The circuit breaker on real traffic: upstream hits counted while it is open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import running_gateway
from tests.support.upstream_app import UpstreamApp

CONFIG = """
version: 1
retry_policies:
  once: {{attempts: 1}}
upstreams:
  app:
    url: {upstream}
    retry: once
    breaker: {{failures: 3, cooldown: 800ms}}
routes:
  - {{path: "/status/{{code}}", forward: {{upstream: app}}}}
  - {{path: /slow, forward: {{upstream: app}}}}
"""

COOLDOWN_SECONDS = 0.8


@pytest.fixture
def gateway_url(upstream_url: str, tmp_path: Path) -> Iterator[str]:
    with running_gateway(CONFIG.format(upstream=upstream_url), tmp_path) as (url, _):
        yield url


def open_breaker(url: str) -> None:
    with httpx.Client() as session:
        assert [session.get(f"{url}/status/503").status_code for _ in range(3)] == [503] * 3


def test_breaker_open_answers_503_at_once_without_touching_the_upstream(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """After 3 failures in a row, requests get bizproxy's 503 with Retry-After, and the
    upstream sees none of them."""
    open_breaker(gateway_url)

    with httpx.Client() as session:
        started = time.monotonic()
        refused = [session.get(f"{gateway_url}/status/200") for _ in range(5)]
        assert time.monotonic() - started < COOLDOWN_SECONDS

    assert len(upstream_app.requests) == 3
    assert {response.status_code for response in refused} == {503}
    assert {response.headers["retry-after"] for response in refused} == {"1"}
    error = refused[0].json()["error"]
    assert error["type"] == "CircuitOpen"
    assert error["upstream"] == "app"


async def test_breaker_lets_one_probe_through_after_the_cooldown(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """After the cooldown one probe reaches the upstream while the others are still
    refused; once it succeeds, the breaker closes and traffic flows again."""
    open_breaker(gateway_url)
    await asyncio.sleep(COOLDOWN_SECONDS + 0.05)

    async with httpx.AsyncClient(timeout=10) as session:
        probe = asyncio.create_task(session.get(f"{gateway_url}/slow", params={"seconds": 0.6}))
        await asyncio.sleep(0.1)
        during = [(await session.get(f"{gateway_url}/status/200")).status_code for _ in range(3)]
        probed = await probe
        after = [(await session.get(f"{gateway_url}/status/200")).status_code for _ in range(3)]

    assert probed.status_code == 200
    assert during == [503] * 3
    assert after == [200] * 3
    assert [request.path for request in upstream_app.requests[3:]] == ["/slow"] + [
        "/status/200"
    ] * 3


def test_breaker_failed_probe_opens_it_for_another_cooldown(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """A probe that fails opens the breaker again at once."""
    open_breaker(gateway_url)
    time.sleep(COOLDOWN_SECONDS + 0.05)

    probe = httpx.get(f"{gateway_url}/status/503")
    refused = httpx.get(f"{gateway_url}/status/200")

    assert probe.json() == {"status": 503}
    assert refused.json()["error"]["type"] == "CircuitOpen"
    assert len(upstream_app.requests) == 4


async def test_breaker_probe_abandoned_by_its_client_frees_the_next_probe(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """A probe whose client goes away settles nothing: the next request may probe."""
    open_breaker(gateway_url)
    await asyncio.sleep(COOLDOWN_SECONDS + 0.05)

    async with httpx.AsyncClient() as session:
        with pytest.raises(httpx.ReadTimeout):
            await session.get(f"{gateway_url}/slow", params={"seconds": 2}, timeout=0.2)
    await asyncio.sleep(0.1)
    next_probe = httpx.get(f"{gateway_url}/status/200")

    assert next_probe.status_code == 200
    assert [request.path for request in upstream_app.requests[3:]] == ["/slow", "/status/200"]
