"""Retry policies on real traffic: attempts counted at the upstream, through a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from bizproxy import ConnectionFailure
from bizproxy.policies.retry import RETRY_BUDGET_FLOOR
from tests.support.gateway import gateway_in_this_loop, running_gateway
from tests.support.servers import read_request_head, serve_raw, unused_port_url
from tests.support.upstream_app import UpstreamApp

CONFIG = """
version: 1
retry_policies:
  upstream_default:
    attempts: 3
    backoff: {{initial: 1ms, max: 5ms}}
    budget: {budget}
    deadline: {deadline}
  opt_in:
    attempts: 3
    backoff: {{initial: 1ms, max: 5ms}}
    retry_non_idempotent: true
    budget: null
  plain:
    attempts: 3
    backoff: {{initial: 1ms, max: 5ms}}
    budget: null
upstreams:
  app:
    url: {upstream}
    retry: upstream_default
    send: {{path: /slow}}
routes:
  - path: /status/{{code}}
    methods: [GET]
    forward: {{upstream: app}}
  - path: /flaky/{{key}}
    methods: [GET]
    forward: {{upstream: app, timeout: {route_timeout}}}
  - path: /slow
    methods: [GET]
    forward: {{upstream: app, timeout: {route_timeout}}}
  - path: /opt-in/{{key}}
    methods: [POST]
    forward: {{upstream: app, path: "/flaky/{{{{ path.key }}}}", retry: opt_in}}
  - path: /plain/{{key}}
    methods: [POST]
    forward: {{upstream: app, path: "/flaky/{{{{ path.key }}}}", retry: plain}}
"""


def config(
    upstream: str,
    *,
    budget: str = "null",
    deadline: str = "null",
    route_timeout: str = "null",
) -> str:
    return CONFIG.format(
        upstream=upstream, budget=budget, deadline=deadline, route_timeout=route_timeout
    )


@pytest.fixture
def gateway_url(upstream_url: str, tmp_path: Path) -> Iterator[str]:
    """A gateway whose upstream policy retries 3 times with no budget and no deadline."""
    with running_gateway(config(upstream_url), tmp_path) as (url, _):
        yield url


# -- the overall deadline ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("route_timeout", "deadline"),
    [("300ms", "5s"), ("5s", "300ms")],
    ids=["route-timeout-smaller", "policy-deadline-smaller"],
)
def test_retry_deadline_smaller_of_route_timeout_and_policy_wins(
    upstream_url: str,
    upstream_app: UpstreamApp,
    tmp_path: Path,
    route_timeout: str,
    deadline: str,
) -> None:
    """A slow upstream is cut at the smaller of forward.timeout and the policy's deadline."""
    text = config(upstream_url, deadline=deadline, route_timeout=route_timeout)
    with running_gateway(text, tmp_path) as (url, _):
        started = time.monotonic()
        response = httpx.get(f"{url}/slow", params={"seconds": "1.2"}, timeout=10)
        elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert 0.3 <= elapsed < 1.0
    assert len(upstream_app.received("/slow")) == 1


async def test_retry_send_honours_the_policy_deadline(
    upstream_url: str, upstream_app: UpstreamApp, tmp_path: Path
) -> None:
    """send() stops at the upstream policy's deadline, every attempt included."""
    async with gateway_in_this_loop(config(upstream_url, deadline="300ms"), tmp_path) as (_, gw):
        started = time.monotonic()
        with pytest.raises(ConnectionFailure) as caught:
            await gw.proxy("app").send({"order": 1})
        elapsed = time.monotonic() - started

    assert caught.value.kind == "timeout"
    assert 0.3 <= elapsed < 1.0
    assert len(upstream_app.received("/slow")) == 1


# -- Retry-After -------------------------------------------------------------------------


def wall_clock(monotonic_moment: float) -> float:
    return monotonic_moment + (time.time() - time.monotonic())


def test_retry_never_sooner_than_retry_after_seconds(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """A 503 with Retry-After: 1 is retried one second later at the soonest, not at backoff."""
    response = httpx.get(f"{gateway_url}/flaky/seconds", params={"fail": 1, "retry_after": 1})

    first, second = upstream_app.received("/flaky/seconds")
    assert response.status_code == 200
    assert second.at - first.at >= 1.0


def test_retry_never_sooner_than_retry_after_http_date(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """A 503 with Retry-After as an HTTP-date is retried at that moment at the soonest."""
    moment = math.floor(time.time()) + 2
    date = email.utils.formatdate(moment, usegmt=True)

    response = httpx.get(f"{gateway_url}/flaky/date?fail=1&retry_after={quote(date)}")

    _, second = upstream_app.received("/flaky/date")
    assert response.status_code == 200
    assert wall_clock(second.at) >= moment - 0.001


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_past_the_deadline_passes_the_answer_back(
    upstream_url: str, upstream_app: UpstreamApp, tmp_path: Path, form: str
) -> None:
    """A Retry-After beyond the route's deadline ends the retries with the upstream's 503."""
    retry_after = (
        "30" if form == "seconds" else email.utils.formatdate(time.time() + 30, usegmt=True)
    )
    with running_gateway(config(upstream_url, route_timeout="2s"), tmp_path) as (url, _):
        started = time.monotonic()
        response = httpx.get(f"{url}/flaky/{form}?fail=5&retry_after={quote(retry_after)}")
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.headers["retry-after"] == retry_after
    assert response.json() == {"attempt": 1}
    assert len(upstream_app.received(f"/flaky/{form}")) == 1
    assert elapsed < 1.0


# -- attempts and the retry budget -------------------------------------------------------


def test_retry_each_request_gets_every_attempt_when_the_budget_allows(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """With no budget, 10 requests to a failing upstream cost exactly 10 x 3 attempts."""
    statuses = [httpx.get(f"{gateway_url}/status/503").status_code for _ in range(10)]

    assert statuses == [503] * 10
    assert len(upstream_app.received("/status/503")) == 30


def test_retry_budget_floor_lets_a_quiet_upstream_retry(
    upstream_url: str, upstream_app: UpstreamApp, tmp_path: Path
) -> None:
    """A single request under a 20% budget still gets all its attempts, from the floor."""
    with running_gateway(config(upstream_url, budget="20%"), tmp_path) as (url, _):
        assert httpx.get(f"{url}/status/503").status_code == 503

    assert len(upstream_app.received("/status/503")) == 3


async def hammer(url: str, *, requests: int, clients: int) -> list[int]:
    """Send `requests` GETs to `url` from `clients` concurrent clients; their statuses."""
    statuses: list[int] = []

    async def client(share: int) -> None:
        async with httpx.AsyncClient(timeout=30) as session:
            for _ in range(share):
                statuses.append((await session.get(url)).status_code)

    await asyncio.gather(*(client(requests // clients) for _ in range(clients)))
    return statuses


def amplification_bound(requests: int, budget: float) -> float:
    return (1 + budget) * requests + RETRY_BUDGET_FLOOR


async def test_retry_budget_bounds_amplification_of_a_total_outage(
    upstream_url: str, upstream_app: UpstreamApp, tmp_path: Path
) -> None:
    """200 requests from 20 clients to an upstream that always answers 503: attempts stay
    within (1 + 20%) x 200 + the floor, where 3 attempts each would be 600."""
    with running_gateway(config(upstream_url, budget="20%"), tmp_path) as (url, _):
        statuses = await hammer(f"{url}/status/503", requests=200, clients=20)

    attempts = len(upstream_app.received("/status/503"))
    assert statuses == [503] * 200
    assert 200 < attempts <= amplification_bound(200, 0.2)


class ResetCounter:
    """A raw upstream that resets every connection after reading a request, and counts."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                await read_request_head(reader)
                self.requests += 1
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return


async def test_retry_budget_bounds_amplification_of_connection_resets(tmp_path: Path) -> None:
    """An upstream that resets every connection: 200 requests from 20 clients send at most
    (1 + 20%) x 200 + the floor requests, and each client gets a 502."""
    counter = ResetCounter()
    with serve_raw(counter) as upstream:
        with running_gateway(config(upstream, budget="20%"), tmp_path) as (url, _):
            statuses = await hammer(f"{url}/status/200", requests=200, clients=20)

    assert statuses == [502] * 200
    assert 200 < counter.requests <= amplification_bound(200, 0.2)


# -- idempotency and bodies held for retry -----------------------------------------------


@pytest.mark.parametrize(
    ("route", "key", "attempts"),
    [("opt-in", None, 1), ("opt-in", "pay-42", 2), ("plain", "pay-42", 1)],
    ids=["opt-in-without-key", "opt-in-with-key", "no-opt-in-with-key"],
)
def test_retry_post_only_with_opt_in_and_an_idempotency_key(
    gateway_url: str, upstream_app: UpstreamApp, route: str, key: str | None, attempts: int
) -> None:
    """A POST that reached the upstream is repeated only when the policy opts in and the
    client sent an Idempotency-Key, which reaches the upstream once per attempt."""
    headers = {"Idempotency-Key": key} if key else {}
    response = httpx.post(
        f"{gateway_url}/{route}/{route}-{key}?fail=1", content=b'{"amount": 5}', headers=headers
    )

    received = upstream_app.received(f"/flaky/{route}-{key}")
    assert len(received) == attempts
    assert response.status_code == (200 if attempts == 2 else 503)
    for request in received:
        sent_keys = [value for name, value in request.headers if name == "idempotency-key"]
        assert sent_keys == ([key] if key else [])
        assert request.body == b'{"amount": 5}'


@pytest.mark.parametrize(("size", "attempts"), [(1024, 2), (200 * 1024, 1)])
def test_retry_holds_bodies_up_to_the_limit_only(
    gateway_url: str, upstream_app: UpstreamApp, size: int, attempts: int
) -> None:
    """A 1 KiB POST is retried; a 200 KiB one, over the 64 KiB hold limit, is sent once."""
    body = bytes(range(256)) * (size // 256)
    response = httpx.post(
        f"{gateway_url}/opt-in/body-{size}?fail=1",
        content=body,
        headers={"Idempotency-Key": f"k-{size}"},
    )

    received = upstream_app.received(f"/flaky/body-{size}")
    assert [request.body == body for request in received] == [True] * attempts
    assert response.status_code == (200 if attempts == 2 else 503)


def test_retry_post_after_connect_error_is_safe(tmp_path: Path) -> None:
    """A POST that never connected is retried without a key: nothing reached the upstream."""
    with running_gateway(config(unused_port_url()), tmp_path) as (url, _):
        response = httpx.post(f"{url}/plain/never", content=b"{}")

    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "RetriesExhausted"
    assert error["attempts"] == 3
