"""The built-in load generator: keep-alive connections on uvloop with httptools, bounded in time.

Used when wrk is not installed. ``python -m bench.pyload --url URL --duration S ...`` keeps
``--connections`` connections busy, each sending its next request when the last answer ends,
and prints one JSON object with the counts and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

REQUEST_TIMEOUT_S = 10.0


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    timeouts: int = 0


class ResponseReader(asyncio.Protocol):
    """Parses answers on one connection and resolves a future with each status code."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport = cast(asyncio.Transport, None)
        self.answer: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"unparseable answer: {err}"))

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("connection closed by the server"))

    def _fail(self, err: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(err)


def build_request(url: str, method: str, body_bytes: int) -> bytes:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    if body_bytes:
        head += f"Content-Type: application/octet-stream\r\nContent-Length: {body_bytes}\r\n"
    return (head + "\r\n").encode() + b"x" * body_bytes


async def _connection(url: str, request: bytes, deadline: float, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    while time.perf_counter() < deadline:
        try:
            transport, reader = await loop.create_connection(
                ResponseReader, parts.hostname or "127.0.0.1", parts.port or 80
            )
        except OSError:
            tally.connect_errors += 1
            await asyncio.sleep(0.01)
            continue
        await _exchange(transport, reader, request, deadline, tally)
        transport.close()


async def _exchange(
    transport: asyncio.BaseTransport,
    reader: ResponseReader,
    request: bytes,
    deadline: float,
    tally: Tally,
) -> None:
    loop = asyncio.get_running_loop()
    while time.perf_counter() < deadline:
        reader.answer = loop.create_future()
        started = time.perf_counter()
        reader.transport.write(request)
        try:
            status = await asyncio.wait_for(reader.answer, REQUEST_TIMEOUT_S)
        except TimeoutError:
            tally.timeouts += 1
            return
        except ConnectionError:
            tally.read_errors += 1
            return
        tally.latencies.append(time.perf_counter() - started)
        if not 200 <= status < 300:
            tally.non_2xx += 1


async def generate(
    url: str, *, method: str, body_bytes: int, duration_s: float, connections: int
) -> dict[str, float | int]:
    """Keep ``connections`` connections busy for ``duration_s``; return counts and percentiles."""
    request = build_request(url, method, body_bytes)
    tally = Tally()
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(*(_connection(url, request, deadline, tally) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(tally.latencies)

    def percentile(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    return {
        "requests": len(ordered),
        "seconds": elapsed,
        "p50_ms": percentile(0.50) * 1000,
        "p99_ms": percentile(0.99) * 1000,
        "non_2xx": tally.non_2xx,
        "socket_errors": tally.connect_errors + tally.read_errors + tally.timeouts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A bounded HTTP/1.1 load generator.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body-bytes", type=int, default=0)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    result = uvloop.run(
        generate(
            args.url,
            method=args.method,
            body_bytes=args.body_bytes,
            duration_s=args.duration,
            connections=args.connections,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
