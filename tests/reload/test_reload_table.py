"""Reloading a live gateway: atomic swaps, draining, warm pools, and the reload summary."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.cli_server import ROOT
from tests.support.gateway import gateway_in_this_loop
from tests.support.servers import serve_app
from tests.support.upstream_app import UpstreamApp

TWO_UPSTREAMS = """
version: 1
server: {{drain_timeout: 5s, admin_token: "${{ADMIN_TOKEN:-}}"}}
throttles:
  once: {{rate: 1/min, burst: 1}}
upstreams:
  a: {{url: "{a}"}}
  b: {{url: "{b}", timeout: {b_timeout}}}
routes:
  - path: /work
    methods: [GET]
    forward: {{upstream: {target}, path: /slow}}
  - path: /budget
    methods: [GET]
    tag: once
    forward: {{upstream: a, path: /echo/budget}}
{extra}"""


def config(a: str, b: str, *, target: str = "a", b_timeout: str = "30s", extra: str = "") -> str:
    return TWO_UPSTREAMS.format(a=a, b=b, target=target, b_timeout=b_timeout, extra=extra)


@pytest.fixture
def two_upstreams() -> object:
    app_a, app_b = UpstreamApp(), UpstreamApp()
    with serve_app(app_a) as url_a, serve_app(app_b) as url_b:
        yield (url_a, app_a), (url_b, app_b)


async def test_reload_lets_a_request_finish_on_the_table_it_started_on(
    two_upstreams: tuple[tuple[str, UpstreamApp], tuple[str, UpstreamApp]], tmp_path: Path
) -> None:
    """A slow request that started before the swap completes against the old upstream."""
    (url_a, app_a), (url_b, app_b) = two_upstreams
    async with gateway_in_this_loop(config(url_a, url_b), tmp_path) as (url, gateway):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            slow = asyncio.create_task(client.get("/work", params={"seconds": "1"}))
            await asyncio.sleep(0.3)
            (tmp_path / "routes.yaml").write_text(config(url_a, url_b, target="b"))
            assert gateway.reloader is not None
            result = await gateway.reloader.reload_now()
            fresh = await client.get("/work", params={"seconds": "0"})
            old = await slow
    assert result["ok"] is True
    assert "route changed: GET /work: forward.upstream a -> b" in result["summary"]
    assert old.status_code == 200 and old.json() == {"slept": 1.0}
    assert fresh.status_code == 200 and fresh.json() == {"slept": 0.0}
    assert [r.query for r in app_a.received("/slow")] == ["seconds=1"]
    assert [r.query for r in app_b.received("/slow")] == ["seconds=0"]


async def test_reload_keeps_unchanged_proxies_and_their_throttle_state(
    two_upstreams: tuple[tuple[str, UpstreamApp], tuple[str, UpstreamApp]], tmp_path: Path
) -> None:
    """An unchanged upstream keeps its proxy; a spent budget stays spent; a changed one is new."""
    (url_a, _), (url_b, _) = two_upstreams
    async with gateway_in_this_loop(config(url_a, url_b), tmp_path) as (url, gateway):
        proxy_a, proxy_b = gateway.proxy("a"), gateway.proxy("b")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/budget")).status_code == 200
            (tmp_path / "routes.yaml").write_text(config(url_a, url_b, b_timeout="2s"))
            assert gateway.reloader is not None
            result = await gateway.reloader.reload_now()
            after = await client.get("/budget")
        assert gateway.proxy("a") is proxy_a
        assert gateway.proxy("b") is not proxy_b
        assert proxy_a.is_connected
        await asyncio.sleep(0.1)
        assert not proxy_b.is_connected
    assert after.status_code == 429
    assert (
        "upstream changed: b: timeout.connect 30s -> 2s; timeout.pool 30s -> 2s; "
        "timeout.read 30s -> 2s; timeout.write 30s -> 2s"
    ) in result["summary"]


async def test_reload_rejected_keeps_table_and_reports_over_http(
    two_upstreams: tuple[tuple[str, UpstreamApp], tuple[str, UpstreamApp]], tmp_path: Path
) -> None:
    """POST /-/reload needs the admin token; a bad edit answers 422 with located errors."""
    (url_a, _), (url_b, _) = two_upstreams
    text = config(url_a, url_b)
    async with gateway_in_this_loop(text, tmp_path, ADMIN_TOKEN="s3cret") as (url, gateway):
        version = gateway.table.version
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            denied = await client.post("/-/reload", headers={"Authorization": "Bearer nope"})
            (tmp_path / "routes.yaml").write_text(text.replace("upstream: a,", "upstream: c,"))
            auth = {"Authorization": "Bearer s3cret"}
            rejected = await client.post("/-/reload", headers=auth)
            still = await client.get("/work", params={"seconds": "0"})
            table = (await client.get("/-/table")).json()
        assert gateway.table.version == version
    assert denied.status_code == 401
    assert rejected.status_code == 422
    errors = rejected.json()["errors"]
    assert [e.split(": ", 1)[1] for e in errors] == [
        f"routes[{n}].forward.upstream: unknown upstream 'c'; upstreams declares a, b"
        for n in (0, 1)
    ]
    assert still.status_code == 200
    assert table["last_reload"]["ok"] is False
    assert table["last_reload"]["errors"] == rejected.json()["errors"]


async def test_reload_openapi_document_follows_the_table(
    two_upstreams: tuple[tuple[str, UpstreamApp], tuple[str, UpstreamApp]], tmp_path: Path
) -> None:
    """A route added by a reload appears in /openapi.json; nothing else needs a restart."""
    (url_a, _), (url_b, _) = two_upstreams
    extra = "  - path: /added/{id}\n    methods: [GET]\n    forward: {upstream: a}\n"
    async with gateway_in_this_loop(config(url_a, url_b), tmp_path) as (url, gateway):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            before = (await client.get("/openapi.json")).json()["paths"]
            (tmp_path / "routes.yaml").write_text(config(url_a, url_b, extra=extra))
            assert gateway.reloader is not None
            await gateway.reloader.reload_now()
            after = (await client.get("/openapi.json")).json()["paths"]
    assert "/added/{id}" not in before
    assert "/added/{id}" in after


def test_diff_command_prints_the_reload_summary(tmp_path: Path) -> None:
    """`bizproxy diff OLD NEW` prints what a reload would change, secrets masked."""
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    base = """
version: 1
upstreams:
  orders:
    url: http://127.0.0.1:9001
    timeout: 10s
    sign: {{secret: "{secret}"}}
routes:
  - path: /a
    methods: [GET]
    forward: {{upstream: orders}}
"""
    old.write_text(base.format(secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    new.write_text(
        base.format(secret="whsec_c2Vjb25kLXNlY3JldC1rZXktMTIzNA==").replace("10s", "2s")
        + "  - path: /b\n    methods: [POST]\n    forward: {upstream: orders}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "bizproxy", "diff", str(old), str(new)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert "route added: POST /b" in lines
    assert (
        "upstream changed: orders: sign.secret changed; timeout.connect 10s -> 2s; "
        "timeout.pool 10s -> 2s; timeout.read 10s -> 2s; timeout.write 10s -> 2s"
    ) in lines
    assert "whsec_" not in result.stdout


async def test_reload_new_budget_applies_to_a_kept_upstream(
    two_upstreams: tuple[tuple[str, UpstreamApp], tuple[str, UpstreamApp]], tmp_path: Path
) -> None:
    """A budget raised by a reload takes effect at once, also for an unchanged upstream."""
    (url_a, _), (url_b, _) = two_upstreams
    async with gateway_in_this_loop(config(url_a, url_b), tmp_path) as (url, gateway):
        proxy_a = gateway.proxy("a")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/budget")).status_code == 200
            assert (await client.get("/budget")).status_code == 429
            raised = config(url_a, url_b).replace("rate: 1/min, burst: 1", "rate: 1000/s")
            (tmp_path / "routes.yaml").write_text(raised)
            assert gateway.reloader is not None
            await gateway.reloader.reload_now()
            after = [(await client.get("/budget")).status_code for _ in range(3)]
        assert gateway.proxy("a") is proxy_a
    assert after == [200, 200, 200]


async def test_reload_of_a_changed_upstream_keeps_its_receive_stream(
    two_upstreams: tuple[tuple[str, UpstreamApp], tuple[str, UpstreamApp]], tmp_path: Path
) -> None:
    """A consumer of receive() keeps getting messages after a reload rebuilt the proxy."""
    (url_a, _), (url_b, _) = two_upstreams
    extra = "  - path: /in\n    methods: [POST]\n    deliver: {upstream: b}\n"
    async with gateway_in_this_loop(config(url_a, url_b, extra=extra), tmp_path) as (
        url,
        gateway,
    ):
        received: list[object] = []

        async def consume() -> None:
            async for message in gateway.proxy("b").receive():
                received.append(message)

        consumer = asyncio.create_task(consume())
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.post("/in", json={"n": 1})).status_code == 202
            changed = config(url_a, url_b, b_timeout="2s", extra=extra)
            (tmp_path / "routes.yaml").write_text(changed)
            assert gateway.reloader is not None
            await gateway.reloader.reload_now()
            assert (await client.post("/in", json={"n": 2})).status_code == 202
            await asyncio.sleep(0.2)
        consumer.cancel()
    assert received == [{"n": 1}, {"n": 2}]
