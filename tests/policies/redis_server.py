"""A redis-server of the tests' own on 127.0.0.1, started and stopped by its PID."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.support.servers import unused_port_url

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound, then released)."""
    return int(unused_port_url().rsplit(":", 1)[1])


class RedisServer:
    """One redis-server process on a fixed port, which can be stopped and started again."""

    def __init__(self, port: int, directory: str) -> None:
        self.port = port
        self.directory = directory
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_seconds: float = 10.0) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        command = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.directory,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready(timeout_seconds)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def _wait_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                assert self._process is not None and self._process.poll() is None, (
                    f"redis-server on port {self.port} exited at start"
                )
                time.sleep(0.02)
        finally:
            client.close()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server on a free port, stopped on exit."""
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(free_port(), directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()
