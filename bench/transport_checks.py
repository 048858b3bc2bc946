"""Behaviour a transport must keep to be used by the proxy, checked on 127.0.0.1.

Each check builds a client on one candidate transport and provokes one behaviour against a
small raw server in the same event loop: timeouts of each kind, the pool limit, a refused
connection, a peer that closes without answering, and streaming in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from bench.transport_candidates import make_transport

STREAM_GAP_S = 0.5
SHORT_TIMEOUT_S = 0.3


class CheckServer:
    """A raw HTTP/1.1 server that records open connections and when request bodies arrive."""

    def __init__(self) -> None:
        self.open = 0
        self.max_open = 0
        self.first_body_at: float | None = None
        self.closing = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        # Let handlers that hold a connection open end by themselves before the loop stops.
        self.closing.set()
        await asyncio.sleep(0.05)
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        body = await self._read_body(reader, headers)
        return await self._answer(target, body, writer)

    async def _read_body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                self.first_body_at = self.first_body_at or time.monotonic()
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length)
        if length:
            self.first_body_at = self.first_body_at or time.monotonic()
        return body

    async def _answer(self, target: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        path, _, query = target.partition("?")
        if path == "/hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), 30)
            return False
        if path == "/close":
            return False
        if path == "/slow":
            await asyncio.sleep(float(query.removeprefix("s=") or "0.2"))
        if path == "/stream":
            await self._stream(writer)
            return True
        payload = b"ok"
        if path == "/echo":
            digest = hashlib.sha256(body).hexdigest()
            payload = json.dumps({"bytes": len(body), "sha256": digest}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
        await writer.drain()
        return True

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"a" * 1024, b"b" * 1024):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(STREAM_GAP_S)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@contextlib.contextmanager
def full_backlog() -> Any:
    """A listener whose accept queue is full, so new connects hang until they time out."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(3):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(address)
        fillers.append(filler)
    try:
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def unused_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


Check = Callable[[str, CheckServer], Awaitable[str]]


def _client(name: str, *, max_connections: int = 10, **timeouts: float) -> httpx.AsyncClient:
    timeout = httpx.Timeout(5.0, **timeouts)
    transport = make_transport(name, max_connections=max_connections, timeout=timeout)
    return httpx.AsyncClient(transport=transport, timeout=timeout)


async def _expect(request: Awaitable[Any], expected: type[Exception]) -> str:
    try:
        await request
    except expected:
        return "ok"
    except Exception as err:
        return f"raised {type(err).__module__}.{type(err).__name__}, not {expected.__name__}"
    return f"no exception, expected {expected.__name__}"


async def check_connect_timeout(name: str, server: CheckServer) -> str:
    with full_backlog() as url:
        async with _client(name, connect=SHORT_TIMEOUT_S) as client:
            return await _expect(client.get(url + "/ok"), httpx.ConnectTimeout)


async def check_read_timeout(name: str, server: CheckServer) -> str:
    async with _client(name, read=SHORT_TIMEOUT_S) as client:
        return await _expect(client.get(server.url + "/hang"), httpx.ReadTimeout)


async def check_pool_timeout(name: str, server: CheckServer) -> str:
    async with _client(name, max_connections=1, pool=SHORT_TIMEOUT_S) as client:
        holder = asyncio.create_task(client.get(server.url + "/slow?s=1.5"))
        await asyncio.sleep(0.1)
        outcome = await _expect(client.get(server.url + "/ok"), httpx.PoolTimeout)
        holder.cancel()
        with contextlib.suppress(BaseException):
            await holder
        return outcome


async def check_pool_limit(name: str, server: CheckServer) -> str:
    async with _client(name, max_connections=4) as client:
        replies = await asyncio.gather(*(client.get(server.url + "/slow?s=0.2") for _ in range(16)))
    statuses = {reply.status_code for reply in replies}
    if server.max_open > 4 or statuses != {200}:
        return f"{server.max_open} connections open at once (limit 4), statuses {statuses}"
    return "ok"


async def check_connect_refused(name: str, server: CheckServer) -> str:
    async with _client(name) as client:
        return await _expect(client.get(unused_port_url() + "/ok"), httpx.ConnectError)


async def check_peer_closes(name: str, server: CheckServer) -> str:
    async with _client(name) as client:
        return await _expect(client.get(server.url + "/close"), httpx.RemoteProtocolError)


async def check_stream_response(name: str, server: CheckServer) -> str:
    async with _client(name) as client:
        started = time.monotonic()
        arrivals = []
        async with client.stream("GET", server.url + "/stream") as response:
            async for chunk in response.aiter_raw():
                if chunk:
                    arrivals.append(time.monotonic() - started)
    if not arrivals or arrivals[0] > STREAM_GAP_S * 0.8:
        first = arrivals[0] if arrivals else None
        return f"first chunk after {first} s: the response was buffered"
    return "ok"


async def check_stream_request(name: str, server: CheckServer) -> str:
    chunks = [bytes([index]) * 16384 for index in range(4)]
    last_yield_at = 0.0

    async def body() -> AsyncIterator[bytes]:
        nonlocal last_yield_at
        for index, chunk in enumerate(chunks):
            if index:
                await asyncio.sleep(0.2)
            last_yield_at = time.monotonic()
            yield chunk

    server.first_body_at = None
    async with _client(name) as client:
        reply = await client.post(server.url + "/echo", content=body())
    echoed = reply.json()
    if echoed["sha256"] != hashlib.sha256(b"".join(chunks)).hexdigest():
        return f"upstream received {echoed['bytes']} bytes that differ from the 65536 sent"
    if server.first_body_at is None or server.first_body_at >= last_yield_at:
        return "body arrived only after the last chunk was produced: the request was buffered"
    return "ok"


CHECKS: dict[str, Check] = {
    "connect-timeout": check_connect_timeout,
    "read-timeout": check_read_timeout,
    "pool-timeout": check_pool_timeout,
    "pool-limit": check_pool_limit,
    "connect-refused": check_connect_refused,
    "peer-closes": check_peer_closes,
    "stream-response": check_stream_response,
    "stream-request": check_stream_request,
}


async def run_checks(name: str) -> dict[str, Any]:
    """Run every check on one candidate; each answers "ok" or what went wrong instead."""
    results: dict[str, str] = {}
    for check, run in CHECKS.items():
        # A server per check, so connections left by one check do not count in the next.
        server = CheckServer()
        await server.start()
        try:
            results[check] = await asyncio.wait_for(run(name, server), 10.0)
        except Exception as err:
            results[check] = f"failed: {type(err).__name__}: {err}"[:200]
        finally:
            await server.close()
    return {"checks": results}
