"""Throttle budgets on real traffic: requests admitted per budget, counted at the gateway."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bizproxy import Throttled
from tests.support.gateway import gateway_in_this_loop, running_gateway
from tests.support.upstream_app import UpstreamApp

CONFIG = """
version: 1
server:
  trusted_proxies: [{trusted}]
throttles:
  steady: {{rate: 20/s, burst: 5}}
  patient: {{rate: 2/s, burst: 1, on_exceed: wait, max_wait: 600ms}}
  per_address: {{rate: 1/min, burst: 1, per: client}}
  per_key: {{rate: 1/min, burst: 1, per: "header:X-Api-Key"}}
  outbound: {{rate: 1/min, burst: 1}}
  slow: {{rate: 10/min, burst: 3}}
upstreams:
  app: {{url: {upstream}}}
routes:
  - {{path: /steady, tag: steady, forward: {{upstream: app, path: /echo/steady}}}}
  - {{path: /slow, tag: slow, forward: {{upstream: app, path: /echo/slow}}}}
  - {{path: /patient, tag: patient, forward: {{upstream: app, path: /echo/patient}}}}
  - {{path: /per-address, tag: per_address, forward: {{upstream: app, path: /echo/a}}}}
  - {{path: /per-key, tag: per_key, forward: {{upstream: app, path: /echo/k}}}}
  - path: /inbox
    methods: [POST]
    tag: per_key
    deliver: {{upstream: app}}
"""

RATE_LIMIT = re.compile(r'^"(?P<tag>[a-z_]+)";r=0;t=(?P<reset>\d+)$')
RATE_LIMIT_POLICY = re.compile(r'^"(?P<tag>[a-z_]+)";q=(?P<quota>\d+);w=(?P<window>\d+)$')


@pytest.fixture
def gateway_url(upstream_url: str, tmp_path: Path) -> Iterator[str]:
    with running_gateway(CONFIG.format(upstream=upstream_url, trusted="127.0.0.1"), tmp_path) as (
        url,
        _,
    ):
        yield url


async def test_throttle_admits_at_most_rate_times_window_plus_burst(gateway_url: str) -> None:
    """300 requests from 6 concurrent clients: the 200s within the window stay within
    20/s x window + 5, the rest are 429s, and none is lost."""
    answers: list[tuple[int, float]] = []

    async def client() -> None:
        async with httpx.AsyncClient(timeout=10) as session:
            for _ in range(50):
                status = (await session.get(f"{gateway_url}/steady")).status_code
                answers.append((status, time.monotonic()))

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(6)))
    window = max(at for _, at in answers) - started

    admitted = sum(status == 200 for status, _ in answers)
    refused = sum(status == 429 for status, _ in answers)
    assert admitted + refused == 300
    assert admitted <= 20 * window + 5
    assert admitted >= 5
    assert refused > 0


def test_throttle_429_carries_retry_after_and_ratelimit_fields(gateway_url: str) -> None:
    """A refusal says when to come back, in Retry-After and the IETF RateLimit fields."""
    statuses = [httpx.get(f"{gateway_url}/slow").status_code for _ in range(3)]
    refused = httpx.get(f"{gateway_url}/slow")

    assert statuses == [200] * 3
    assert refused.status_code == 429
    retry_after = int(refused.headers["retry-after"])
    limit = RATE_LIMIT.match(refused.headers["ratelimit"])
    policy = RATE_LIMIT_POLICY.match(refused.headers["ratelimit-policy"])
    assert limit is not None and policy is not None
    assert limit["tag"] == policy["tag"] == "slow"
    assert (int(policy["quota"]), int(policy["window"])) == (10, 60)
    assert 5 <= int(limit["reset"]) == retry_after <= 6
    assert refused.json()["error"]["type"] == "Throttled"


async def test_throttle_wait_admits_within_max_wait_and_rejects_beyond(gateway_url: str) -> None:
    """on_exceed: wait holds requests for the next token (due in 0.5 s, within max_wait);
    one gets it, and the rest, whose token would come after max_wait, get 429 then."""
    async with httpx.AsyncClient(timeout=10) as session:
        first = await session.get(f"{gateway_url}/patient")

        async def timed() -> tuple[int, float]:
            started = time.monotonic()
            response = await session.get(f"{gateway_url}/patient")
            return response.status_code, time.monotonic() - started

        waited = await asyncio.gather(*(timed() for _ in range(4)))

    assert first.status_code == 200
    admitted = [seconds for status, seconds in waited if status == 200]
    refused = [seconds for status, seconds in waited if status == 429]
    assert len(admitted) == 1
    assert len(refused) == 3
    assert 0.3 <= admitted[0] <= 0.6 + 0.2
    assert all(seconds <= 0.6 + 0.2 for seconds in refused)


def test_throttle_per_client_believes_forwarded_for_from_trusted_proxies(gateway_url: str) -> None:
    """per: client splits a budget by address, taking X-Forwarded-For from a trusted peer."""

    def get(address: str) -> int:
        response = httpx.get(f"{gateway_url}/per-address", headers={"X-Forwarded-For": address})
        return response.status_code

    assert [get("10.0.0.1"), get("10.0.0.1"), get("10.0.0.2")] == [200, 429, 200]


def test_throttle_per_client_ignores_forwarded_for_from_untrusted_peers(
    upstream_url: str, tmp_path: Path
) -> None:
    """From an untrusted peer, X-Forwarded-For cannot buy a fresh bucket."""
    text = CONFIG.format(upstream=upstream_url, trusted="10.9.9.9")
    with running_gateway(text, tmp_path) as (url, _):
        statuses = [
            httpx.get(f"{url}/per-address", headers={"X-Forwarded-For": address}).status_code
            for address in ("10.0.0.1", "10.0.0.2")
        ]

    assert statuses == [200, 429]


def test_throttle_per_header_splits_by_the_named_header(gateway_url: str) -> None:
    """per: header:X-Api-Key gives each key its own bucket; requests without it share one."""

    def get(key: str | None) -> int:
        headers = {"X-Api-Key": key} if key else {}
        return httpx.get(f"{gateway_url}/per-key", headers=headers).status_code

    assert [get("alpha"), get("alpha"), get("beta"), get(None), get(None)] == [
        200,
        429,
        200,
        200,
        429,
    ]


def test_throttle_deliver_routes_split_and_answer_like_forward_routes(gateway_url: str) -> None:
    """A deliver route draws on its tag per client too, and its 429 has the same fields."""

    def post(key: str) -> httpx.Response:
        return httpx.post(f"{gateway_url}/inbox", json={"n": 1}, headers={"X-Api-Key": key})

    first, second, other = post("alpha"), post("alpha"), post("beta")

    assert [first.status_code, second.status_code, other.status_code] == [202, 429, 202]
    assert second.headers["ratelimit-policy"] == '"per_key";q=1;w=60'
    assert RATE_LIMIT.match(second.headers["ratelimit"]) is not None


async def test_throttle_send_raises_throttled_with_retry_after(
    upstream_url: str, upstream_app: UpstreamApp, tmp_path: Path
) -> None:
    """send() over its tag's budget raises Throttled with the tag and the seconds to wait."""
    text = CONFIG.format(upstream=upstream_url, trusted="127.0.0.1")
    async with gateway_in_this_loop(text, tmp_path) as (_, gateway):
        proxy = gateway.proxy("app")
        await proxy.send({"n": 1}, tag="outbound")
        with pytest.raises(Throttled) as caught:
            await proxy.send({"n": 2}, tag="outbound")

    assert caught.value.tag == "outbound"
    assert caught.value.retry_after is not None
    assert 55 < caught.value.retry_after <= 60
    assert len(upstream_app.received("/send")) == 1
