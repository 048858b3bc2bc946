"""Run `bizproxy serve` as a real process on 127.0.0.1, and stop it by its PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.servers import unused_port_url

ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    def __init__(self, process: subprocess.Popen[str], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def log_text(self) -> str:
        return self.log.read_text()

    def wait_for(self, predicate: object, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            time.sleep(0.05)
        return False


@contextlib.contextmanager
def serve_process(
    config: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[ServeProcess]:
    """Start `python -m bizproxy serve CONFIG`; yield once /-/ready answers."""
    url = unused_port_url()
    port = url.rsplit(":", 1)[1]
    log = config.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "bizproxy", "serve", str(config), "--port", port, *extra]
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
    served = ServeProcess(process, url, log)
    try:
        if not served.wait_for(lambda: _ready(url) or process.poll() is not None, 15):
            raise RuntimeError(f"bizproxy serve did not become ready:\n{served.log_text()}")
        if process.poll() is not None:
            raise RuntimeError(f"bizproxy serve exited {process.returncode}:\n{served.log_text()}")
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False
