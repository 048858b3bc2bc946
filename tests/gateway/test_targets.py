"""Upstreams with several targets, on real servers on 127.0.0.1: failover, health, reloads."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bizproxy.errors import BusinessProxyException
from bizproxy.proxy import HTTPXFastAPIProxy
from tests.support.gateway import gateway_in_this_loop
from tests.support.servers import serve_app, unused_port_url
from tests.support.upstream_app import UpstreamApp

CONFIG = """
version: 1
server: {{drain_timeout: 1s}}
retry_policies:
  retry: {{attempts: 3, backoff: {{initial: 1ms, max: 1ms}}}}
  once: {{attempts: 1}}
upstreams:
  orders:
    retry: {retry}
    targets: [{targets}]
    outlier: {{failures: {failures}, cooldown: {cooldown}, max_ejected: {max_ejected}}}
{health}
routes:
  - path: /orders/{{rest:path}}
    methods: [GET]
    forward: {{upstream: orders, path: "/echo/{{{{ path.rest }}}}"}}
"""


def config(
    urls: list[str],
    *,
    failures: int = 3,
    cooldown: str = "30s",
    max_ejected: str = "50%",
    health: str = "",
    retry: str = "once",
) -> str:
    return CONFIG.format(
        retry=retry,
        targets=", ".join(urls),
        failures=failures,
        cooldown=cooldown,
        max_ejected=max_ejected,
        health=f"    health: {health}" if health else "",
    )


@contextlib.contextmanager
def three_targets() -> Iterator[tuple[list[str], list[UpstreamApp], contextlib.ExitStack]]:
    apps = [UpstreamApp() for _ in range(3)]
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve_app(app)) for app in apps]
        yield urls, apps, stack


async def count_failures(proxy: HTTPXFastAPIProxy, requests: int) -> int:
    failed = 0
    for _ in range(requests):
        try:
            async with await proxy.request("GET", "/echo/load") as response:
                await response.aread()
                failed += response.status_code >= 500
        except BusinessProxyException:
            failed += 1
    return failed


def health_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("bizproxy health checks")]


async def test_targets_stopped_one_is_ejected_and_returns_after_probes_pass(
    tmp_path: Path,
) -> None:
    """A stopped target costs at most `failures` requests; restarted, it serves again."""
    apps = [UpstreamApp() for _ in range(3)]
    with serve_app(apps[0]) as first, serve_app(apps[2]) as third:
        second_server = serve_app(apps[1])
        second = second_server.__enter__()
        port = int(second.rsplit(":", 1)[1])
        health = "{path: /healthz, interval: 100ms, timeout: 500ms, healthy: 2, unhealthy: 2}"
        text = config([first, second, third], failures=3, health=health)
        async with gateway_in_this_loop(text, tmp_path) as (_url, gateway):
            proxy = gateway.proxy("orders")
            assert await count_failures(proxy, 30) == 0
            second_server.__exit__(None, None, None)

            failures = await count_failures(proxy, 60)
            assert 1 <= failures <= 3
            assert proxy.targets.targets[1].state in ("ejected", "unhealthy")
            assert await count_failures(proxy, 30) == 0
            print(f"failed requests before the ejection: {failures}")

            with serve_app(apps[1], port=port):
                before = len(apps[1].received("/echo"))
                deadline = time.monotonic() + 5
                while proxy.targets.targets[1].state != "healthy":
                    assert time.monotonic() < deadline, "the restarted target never recovered"
                    await asyncio.sleep(0.05)
                assert await count_failures(proxy, 30) == 0
                assert len(apps[1].received("/echo")) - before == 10
            assert health_tasks()
        assert not health_tasks()
        assert not proxy.health_checks_running


async def test_targets_weights_split_counted_requests(tmp_path: Path) -> None:
    """Weights 1, 2 and 3 over 300 requests give 50, 100 and 150, within 2 each."""
    with three_targets() as (urls, apps, _):
        weights = zip(urls, (1, 2, 3), strict=True)
        weighted = [f"{{url: '{url}', weight: {weight}}}" for url, weight in weights]
        async with gateway_in_this_loop(config(weighted), tmp_path) as (_url, gateway):
            assert await count_failures(gateway.proxy("orders"), 300) == 0
        counts = [len(app.received("/echo")) for app in apps]
        print(f"requests per target with weights 1, 2, 3: {counts}")
        for count, expected in zip(counts, (50, 100, 150), strict=True):
            assert abs(count - expected) <= 2, counts


async def test_targets_all_down_answer_503_with_retry_after_quickly(tmp_path: Path) -> None:
    """With every target ejected, the gateway answers 503 at once, with Retry-After."""
    urls = [unused_port_url(), unused_port_url()]
    text = config(urls, failures=1, max_ejected="100%", retry="retry")
    async with gateway_in_this_loop(text, tmp_path) as (url, _gateway):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            # The first request tries both targets, each refuses and is ejected.
            first = await client.get("/orders/x")
            started = time.monotonic()
            refused = await client.get("/orders/x")
            elapsed = time.monotonic() - started
    print(f"seconds to a 503 with every target ejected: {elapsed:.4f}")
    assert first.status_code == 503
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 29
    assert refused.json()["error"]["type"] == "NoHealthyTarget"
    assert elapsed < 0.5


async def test_targets_table_and_metrics_show_each_target_state(tmp_path: Path) -> None:
    """/-/table lists each target's state and last ejection; /metrics has a state gauge."""
    with serve_app(UpstreamApp()) as alive:
        dead = unused_port_url()
        text = config([alive, dead], failures=1)
        async with gateway_in_this_loop(text, tmp_path) as (url, _gateway):
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                for _ in range(4):
                    await client.get("/orders/x")
                table = (await client.get("/-/table")).json()
                metrics = (await client.get("/metrics")).text
    states = {t["url"]: t for t in table["upstreams"]["orders"]["targets"]}
    assert states[alive]["state"] == "healthy"
    assert states[dead]["state"] == "ejected"
    assert states[dead]["last_ejection"]["reason"] == "1 failures in a row, last connect-error"
    assert (
        f'bizproxy_upstream_target_state{{state="ejected",target="{dead}",upstream="orders"}} 1.0'
        in metrics
    )


async def test_targets_reload_changing_the_list_keeps_remaining_pools(tmp_path: Path) -> None:
    """A reload that swaps one target keeps the others' sessions and stops old health tasks."""
    health = "{interval: 100ms, timeout: 500ms}"
    with three_targets() as (urls, _apps, _):
        text = config(urls[:2], health=health)
        async with gateway_in_this_loop(text, tmp_path) as (_url, gateway):
            old = gateway.proxy("orders")
            assert await count_failures(old, 4) == 0
            kept = old.targets.targets[0]
            pools = dict(kept.transport._pools)  # type: ignore[attr-defined]
            dropped = old.targets.targets[1]
            assert pools and len(health_tasks()) == 1

            (tmp_path / "routes.yaml").write_text(config([urls[0], urls[2]], health=health))
            assert gateway.reloader is not None
            assert (await gateway.reloader.reload_now())["ok"]
            new = gateway.proxy("orders")
            assert new is not old
            assert new.targets.targets[0] is kept
            assert kept.transport._pools == pools  # type: ignore[attr-defined]
            assert await count_failures(new, 4) == 0

            deadline = time.monotonic() + 5
            while old.is_connected:
                assert time.monotonic() < deadline, "the old proxy was never retired"
                await asyncio.sleep(0.05)
            assert kept.transport._pools == pools  # type: ignore[attr-defined]
            assert dropped.transport._pools == {}  # type: ignore[attr-defined]
            assert not old.health_checks_running and len(health_tasks()) == 1
        assert not health_tasks()
