"""Retry and throttle plug-ins named in routes.yaml, on real traffic through a gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import running_gateway
from tests.support.upstream_app import UpstreamApp

CONFIG = """
version: 1
retry_policies:
  teapot:
    attempts: 3
    backoff: {{initial: 1ms, max: 5ms}}
    budget: null
    plugin: "examples.plugins:retry_on_teapot"
  unavailable:
    attempts: 5
    backoff: {{initial: 1ms, max: 5ms}}
    budget: null
    plugin: "examples.plugins:retry_while_unavailable"
throttles:
  partner: {{plugin: "examples.plugins:partner_allows"}}
  partner_async: {{plugin: "examples.plugins:partner_allows_async"}}
upstreams:
  app: {{url: {upstream}}}
routes:
  - path: /teapot/{{key}}
    methods: [GET, POST]
    forward: {{upstream: app, path: "/flaky/{{{{ path.key }}}}", retry: teapot}}
  - path: /unavailable/{{key}}
    forward: {{upstream: app, path: "/flaky/{{{{ path.key }}}}", retry: unavailable}}
  - {{path: /partner, tag: partner, forward: {{upstream: app, path: /echo/p}}}}
  - {{path: /partner-async, tag: partner_async, forward: {{upstream: app, path: /echo/p}}}}
"""


@pytest.fixture
def gateway_url(upstream_url: str, tmp_path: Path) -> Iterator[str]:
    with running_gateway(CONFIG.format(upstream=upstream_url), tmp_path) as (url, _):
        yield url


@pytest.mark.parametrize(
    ("key", "status", "attempts", "answer"),
    [("brewing", 418, 2, 200), ("down", 503, 1, 503)],
)
def test_plugins_sync_retry_plugin_decides_which_failures_to_retry(
    gateway_url: str,
    upstream_app: UpstreamApp,
    key: str,
    status: int,
    attempts: int,
    answer: int,
) -> None:
    """retry_on_teapot retries a 418 and leaves a 503 alone."""
    response = httpx.get(f"{gateway_url}/teapot/{key}", params={"fail": 1, "status": status})

    assert response.status_code == answer
    assert len(upstream_app.received(f"/flaky/{key}")) == attempts


def test_plugins_async_retry_plugin_is_awaited(gateway_url: str, upstream_app: UpstreamApp) -> None:
    """An async plug-in that allows two retries gives three attempts out of five allowed."""
    response = httpx.get(f"{gateway_url}/unavailable/always", params={"fail": 9})

    assert response.status_code == 503
    assert len(upstream_app.received("/flaky/always")) == 3


def test_plugins_retry_plugin_cannot_repeat_a_post_without_a_key(
    gateway_url: str, upstream_app: UpstreamApp
) -> None:
    """A plug-in that says "retry" does not repeat a POST that reached the upstream."""
    response = httpx.post(f"{gateway_url}/teapot/post?fail=1&status=418", content=b"{}")

    assert response.status_code == 418
    assert len(upstream_app.received("/flaky/post")) == 1


@pytest.mark.parametrize("route", ["/partner", "/partner-async"])
def test_plugins_throttle_plugin_admits_or_refuses(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """A throttle plug-in, sync or async, admits its tag until the tag is paused."""
    assert httpx.get(f"{gateway_url}{route}").status_code == 200

    monkeypatch.setenv("BIZPROXY_PAUSED_TAGS", "partner, partner_async")
    refused = httpx.get(f"{gateway_url}{route}")

    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "Throttled"
