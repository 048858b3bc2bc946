"""Steady traffic through a live `bizproxy serve` while routes.yaml is rewritten on disk."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.support.cli_server import serve_process

VERSION = """
version: 1
upstreams:
  app: {{url: "{upstream}"}}
routes:
  - path: /which
    methods: [GET]
    forward: {{upstream: app, path: /echo/{name}, headers: {{X-Table: "{name}"}}}}
"""

REWRITES = 24
WORKERS = 8


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(".routes.yaml.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def expected_reloads(first: str, versions: list[str]) -> int:
    """Valid versions that differ from the last good one (an identical one is skipped)."""
    last_good, count = first, 0
    for text in versions:
        if "nowhere" in text:
            continue
        count += text != last_good
        last_good = text
    return count


@pytest.mark.slow
async def test_reload_under_load_loses_no_request(upstream_url: str, tmp_path: Path) -> None:
    """24 rewrites (valid, valid, invalid, ...) under 8 concurrent clients: every request
    answers 200 from exactly one table (its path and header agree)."""
    config = tmp_path / "routes.yaml"
    first = VERSION.format(upstream=upstream_url, name="v0")
    config.write_text(first)
    versions = [
        VERSION.format(upstream=upstream_url, name=f"v{n % 2 + 1}")
        if n % 3 != 2
        else "version: 1\nroutes: [{path: /which, forward: {upstream: nowhere}}]\n"
        for n in range(REWRITES)
    ]
    with serve_process(config) as served:
        done = asyncio.Event()
        answers: list[tuple[int, str, str]] = []

        async def client_loop() -> None:
            async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
                while not done.is_set():
                    response = await client.get("/which")
                    if response.status_code != 200:
                        answers.append((response.status_code, response.text, ""))
                        continue
                    seen = response.json()
                    header = dict(seen["headers"]).get("x-table", "")
                    answers.append((200, seen["path"], header))

        workers = [asyncio.create_task(client_loop()) for _ in range(WORKERS)]
        started = time.monotonic()
        for text in versions:
            await asyncio.sleep(0.35)
            await asyncio.to_thread(write_atomically, config, text)
        await asyncio.sleep(1.0)
        done.set()
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - started
        log = served.log_text()

    failures = [a for a in answers if a[0] != 200]
    mismatched = [a for a in answers if a[0] == 200 and a[1] != f"/echo/{a[2]}"]
    seen_tables = {a[2] for a in answers}
    assert failures == []
    assert mismatched == []
    assert {"v1", "v2"} <= seen_tables
    assert log.count("reloaded routes.yaml") == expected_reloads(first, versions), log
    assert log.count("rejected the edit") == REWRITES // 3, log
    assert len(answers) > 100, f"only {len(answers)} requests in {elapsed:.1f}s"
