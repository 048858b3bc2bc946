"""`bizproxy serve --workers N`: several processes, one port, metrics added up."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gateway.test_operations import metric_value
from tests.support.cli_server import serve_process


def test_serve_workers_share_the_port_and_add_up_metrics(upstream_url: str, tmp_path: Path) -> None:
    """Two workers answer; /metrics counts every request whichever worker served it;
    the memory throttle store is warned about."""
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"""
version: 1
upstreams:
  app: {{url: "{upstream_url}"}}
routes:
  - path: /w
    methods: [GET]
    forward: {{upstream: app, path: /echo/w}}
"""
    )
    with serve_process(config, "--workers", "2") as served:
        statuses = [httpx.get(f"{served.url}/w").status_code for _ in range(40)]
        text = httpx.get(f"{served.url}/metrics").text
        log = served.log_text()
    assert statuses == [200] * 40
    assert (
        metric_value(text, "bizproxy_requests_total", route="/w", method="GET", status="200") == 40
    )
    assert "2 workers with the memory throttle store" in log
    assert log.count("Started server process") == 2
