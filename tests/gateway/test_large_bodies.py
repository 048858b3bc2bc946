"""Large bodies stream through: the proxy's memory stays flat whatever the body's size."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli_server import serve_process
from tests.support.servers import serve_app

CHUNK = b"z" * (1024 * 1024)


class CountingSink:
    """An upstream that counts the bytes it receives and keeps none of them."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            event = await receive()
            self.received += len(event.get("body", b""))
            if not event.get("more_body"):
                break
        body = str(self.received).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.mark.slow
def test_forward_streams_a_large_upload_with_flat_memory(tmp_path: Path) -> None:
    """A 512 MiB upload reaches the upstream whole while bizproxy's RSS grows < 48 MiB."""
    size_mib = 512
    sink = CountingSink()
    with serve_app(sink) as upstream:
        config = tmp_path / "routes.yaml"
        config.write_text(
            f"""
version: 1
server: {{max_body: 1GiB}}
upstreams:
  sink: {{url: "{upstream}", timeout: 60s}}
routes:
  - path: /upload
    methods: [POST]
    forward: {{upstream: sink, timeout: 60s}}
"""
        )
        with serve_process(config) as served:
            pid = served.process.pid
            baseline = rss_mib(pid)
            peak = [baseline]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak.append(rss_mib(pid))
                    time.sleep(0.05)

            def body() -> Iterator[bytes]:
                for _ in range(size_mib):
                    yield CHUNK

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                response = httpx.post(
                    f"{served.url}/upload",
                    content=body(),
                    headers={"content-length": str(size_mib * len(CHUNK))},
                    timeout=120,
                )
            finally:
                done.set()
                sampler.join()
    assert response.status_code == 200
    assert int(response.text) == size_mib * len(CHUNK)
    assert max(peak) - baseline < 48, f"RSS grew from {baseline:.0f} to {max(peak):.0f} MiB"


@pytest.mark.slow
def test_forward_streams_a_large_download_with_flat_memory(
    upstream_url: str, tmp_path: Path
) -> None:
    """A 512 MiB answer reaches the client whole while bizproxy's RSS grows < 48 MiB."""
    size = 512 * 1024 * 1024
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"""
version: 1
upstreams:
  app: {{url: "{upstream_url}", timeout: 60s}}
routes:
  - path: /bytes
    methods: [GET]
    forward: {{upstream: app, timeout: 60s}}
"""
    )
    with serve_process(config) as served:
        pid = served.process.pid
        baseline = rss_mib(pid)
        peak = baseline
        received = 0
        with httpx.stream("GET", f"{served.url}/bytes?n={size}", timeout=120) as response:
            for index, chunk in enumerate(response.iter_raw()):
                received += len(chunk)
                if index % 256 == 0:
                    peak = max(peak, rss_mib(pid))
    assert response.status_code == 200
    assert received == size
    assert peak - baseline < 48, f"RSS grew from {baseline:.0f} to {peak:.0f} MiB"
