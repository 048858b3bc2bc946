"""Outbound transports behind ``httpx.AsyncClient``, and the loop that drives one of them.

Run as a child of ``bench.transports``, one process per candidate and measurement:
``python -m bench.transport_candidates NAME --url URL --requests N --concurrency C``
prints one JSON object. Only the standard library and httpx are imported at the top, so
the child also runs under an interpreter that has nothing else (the no-sniffio venv).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

# Name -> (module that must be importable, pip package that provides it).
CANDIDATES: dict[str, tuple[str, str]] = {
    "httpx-default": ("httpcore", "httpx"),
    "httpx-default-nosniffio": ("httpcore", "httpx"),
    "httpx-aiohttp": ("httpx_aiohttp", "httpx-aiohttp"),
    "httpx-pyreqwest": ("pyreqwest", "pyreqwest"),
    "httpx-pycurl": ("httpx_pycurl", "httpx-pycurl"),
    "aiohttp": ("aiohttp", "aiohttp"),
    # bizproxy's own HTTP/1.1 transport (httptools parsing, asyncio sockets).
    "httpx-bizproxy-http1": ("bizproxy", "bizproxy"),
    # The same transports called without AsyncClient.send: what the client's own work costs.
    "direct-httpx-default": ("httpcore", "httpx"),
    "direct-httpx-aiohttp": ("httpx_aiohttp", "httpx-aiohttp"),
    "direct-httpx-bizproxy-http1": ("bizproxy", "bizproxy"),
    # bizproxy's transport as the proxy calls it: send() and read_chunk(), no httpx.Request.
    "bizproxy-http1-send": ("bizproxy", "bizproxy"),
}
SEND_CANDIDATE = "bizproxy-http1-send"
DIRECT_PREFIX = "direct-"
BASELINE = "aiohttp"
REFERENCE = "httpx-default"

Send = Callable[[], Awaitable[int]]


def missing_module(name: str) -> str | None:
    """The pip package to install for a candidate, or None when it can run here."""
    module, package = CANDIDATES[name]
    return None if importlib.util.find_spec(module) else package


def _seconds(value: float | None) -> timedelta:
    return timedelta(seconds=value if value is not None else 3600.0)


def make_transport(
    name: str, *, max_connections: int, timeout: httpx.Timeout
) -> httpx.AsyncBaseTransport:
    """The transport for a candidate, with one pool limit and timeouts for every kind."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    if name in ("httpx-default", "httpx-default-nosniffio"):
        return httpx.AsyncHTTPTransport(limits=limits)
    if name == "httpx-aiohttp":
        return _aiohttp_transport(limits)
    if name == "httpx-pyreqwest":
        return _pyreqwest_transport(max_connections, timeout)
    if name == "httpx-bizproxy-http1":
        from bizproxy.http1 import Http1Transport

        return Http1Transport(
            max_connections=max_connections,
            max_keepalive=max_connections,
            keepalive_expiry_seconds=5.0,
        )
    if name == "httpx-pycurl":
        from httpx_pycurl import AsyncPyCurlTransport  # type: ignore[import-not-found]

        pycurl_transport: httpx.AsyncBaseTransport = AsyncPyCurlTransport(
            max_connections=max_connections
        )
        return pycurl_transport
    raise ValueError(f"unknown httpx transport candidate {name!r}; known: {sorted(CANDIDATES)}")


def _aiohttp_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        # A proxy must not keep upstream cookies and replay them for other clients.
        connector = aiohttp.TCPConnector(limit=limits.max_connections or 0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AiohttpTransport(limits=limits, client=session)


def _pyreqwest_transport(max_connections: int, timeout: httpx.Timeout) -> httpx.AsyncBaseTransport:
    from pyreqwest.client import ClientBuilder  # type: ignore[import-not-found]
    from pyreqwest.compatibility.httpx import HttpxTransport  # type: ignore[import-not-found]

    # A proxy passes bodies and redirects through untouched.
    builder = (
        ClientBuilder()
        .max_connections(max_connections)
        .follow_redirects(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .connect_timeout(_seconds(timeout.connect))
        .read_timeout(_seconds(timeout.read))
        .pool_timeout(_seconds(timeout.pool))
    )
    transport: httpx.AsyncBaseTransport = HttpxTransport(builder.build())
    return transport


async def _httpx_sender(name: str, url: str, concurrency: int) -> tuple[Send, Any]:
    timeout = httpx.Timeout(10.0)
    transport = make_transport(name, max_connections=max(concurrency, 1), timeout=timeout)
    client = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def send() -> int:
        response = await client.get(url)
        return response.status_code

    return send, client


async def _direct_sender(name: str, url: str, concurrency: int) -> tuple[Send, Any]:
    timeout = httpx.Timeout(10.0)
    transport = make_transport(
        name.removeprefix(DIRECT_PREFIX), max_connections=max(concurrency, 1), timeout=timeout
    )
    extensions = {"timeout": timeout.as_dict()}

    async def send() -> int:
        response = await transport.handle_async_request(
            httpx.Request("GET", url, extensions=extensions)
        )
        await response.aread()
        await response.aclose()
        return response.status_code

    return send, transport


async def _aiohttp_sender(url: str, concurrency: int) -> tuple[Send, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=max(concurrency, 1))
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def send() -> int:
        async with session.get(url) as response:
            await response.read()
            return response.status

    return send, session


async def _bizproxy_sender(url: str, concurrency: int) -> tuple[Send, Any]:
    from bizproxy.http1 import Http1Body

    transport = make_transport(
        "httpx-bizproxy-http1", max_connections=max(concurrency, 1), timeout=httpx.Timeout(10.0)
    )
    timeouts = httpx.Timeout(10.0).as_dict()

    async def send() -> int:
        response = await transport.send("GET", url, [], None, timeouts)  # type: ignore[attr-defined]
        body = response.stream
        assert isinstance(body, Http1Body)
        while await body.read_chunk():
            pass
        return int(response.status_code)

    return send, transport


async def _drive(send: Send, requests: int, concurrency: int, max_seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            started = time.perf_counter()
            try:
                status = await send()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    done = requests - remaining
    return {
        "requests": done,
        "seconds": elapsed,
        "rps": done / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "errors": errors,
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    name: str, url: str, requests: int, concurrency: int, max_seconds: float
) -> dict[str, Any]:
    """Warm the pool, then time ``requests`` GETs (for at most ``max_seconds``) from C tasks."""
    if name == BASELINE:
        send, closer = await _aiohttp_sender(url, concurrency)
    elif name == SEND_CANDIDATE:
        send, closer = await _bizproxy_sender(url, concurrency)
    elif name.startswith(DIRECT_PREFIX):
        send, closer = await _direct_sender(name, url, concurrency)
    else:
        send, closer = await _httpx_sender(name, url, concurrency)
    try:
        warm_up = max(concurrency * 4, min(requests // 10, 1000))
        await _drive(send, warm_up, concurrency, max_seconds)
        return await _drive(send, requests, concurrency, max_seconds)
    finally:
        await (closer.aclose() if hasattr(closer, "aclose") else closer.close())


def _run(coro: Awaitable[dict[str, Any]], loop: str) -> dict[str, Any]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    return asyncio.run(coro)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure one outbound transport candidate.")
    parser.add_argument("name", choices=sorted(CANDIDATES))
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=15.0)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--checks", action="store_true", help="run the behaviour checks instead")
    args = parser.parse_args(argv)

    if args.name.endswith("-nosniffio") and importlib.util.find_spec("sniffio"):
        print(json.dumps({"error": f"sniffio is importable in {sys.executable}"}))
        return 1
    if args.checks:
        from bench.transport_checks import run_checks

        result = _run(run_checks(args.name), args.loop)
    else:
        result = _run(
            measure(args.name, args.url, args.requests, args.concurrency, args.max_seconds),
            args.loop,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
