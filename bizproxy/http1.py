"""The outbound transport under `httpx.AsyncClient`: HTTP/1.1 over asyncio, with answers
parsed by httptools (llhttp, the parser Node.js uses).

Chosen by measurement (bench/transports.py): at 32 connections one request costs about a
seventh of what it costs through aiohttp's client, the fastest library measured. It does
what a proxy needs and no more: the URL goes out byte for byte, no header is added but
Host and the body's framing, bodies are neither decoded nor buffered whole (both ways
stream with backpressure), nothing is resent by the transport itself (the retry policy
decides and counts), and every failure is the httpx exception that says what happened,
so that `proxy.translate_httpx_error` stays the one boundary to bizproxy's exceptions.

One pool per origin: at most `max_connections` open, at most `max_keepalive` idle, idle
ones closed once older than `keepalive_expiry_seconds` (checked when a connection is
taken; there is no background task).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx

from bizproxy.http1_connection import Connection, request_head, send_body

_default_ssl_context: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _default_ssl_context
    if _default_ssl_context is None:
        _default_ssl_context = ssl.create_default_context()
    return _default_ssl_context


class _Origin:
    """Scheme, host and port of a URL, and the Host header that names them."""

    __slots__ = ("authority", "host", "port", "tls")

    def __init__(self, scheme: str, authority: str) -> None:
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        self.tls = scheme == "https"
        self.authority = authority
        host, port = authority, ""
        if authority.startswith("["):
            end = authority.find("]")
            if end < 0:
                raise httpx.InvalidURL(f"invalid host in {authority!r}")
            host, port = authority[1:end], authority[end + 1 :].removeprefix(":")
        elif ":" in authority:
            host, port = authority.rsplit(":", 1)
        if not host or "@" in host:
            raise httpx.InvalidURL(f"invalid host in {authority!r}")
        if port and not port.isdigit():
            raise httpx.InvalidURL(f"invalid port in {authority!r}")
        self.host = host
        self.port = int(port) if port else (443 if self.tls else 80)


def _split_url(url: str) -> tuple[str, str, str]:
    """(scheme, authority, request target) of an absolute URL, the target as written."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise httpx.UnsupportedProtocol(f"expected an absolute http(s) URL, got {url!r}")
    slash = rest.find("/")
    query = rest.find("?")
    end = min(index for index in (slash, query, len(rest)) if index >= 0)
    authority, target = rest[:end], rest[end:]
    if target.startswith("?"):
        target = f"/{target}"
    return scheme.lower(), authority, target or "/"


class _Pool:
    """The connections to one origin."""

    def __init__(self, origin: _Origin, *, limit: int, idle_limit: int, expiry: float) -> None:
        self.origin = origin
        self._limit = limit
        self._idle_limit = idle_limit
        self._expiry = expiry
        self._idle: list[Connection] = []
        self._connections: set[Connection] = set()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self.closed = False

    async def acquire(self, timeouts: dict[str, float | None]) -> Connection:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and now - connection.idle_since < self._expiry:
                return connection
            connection.close()
        if self._open >= self._limit:
            handed = await self._wait_for_turn(loop, timeouts.get("pool"))
            if handed is not None:
                return handed
            # Else a slot was reserved for us (see `_wake_one`).
        else:
            self._open += 1
        made: list[Connection] = []
        try:
            return await self._connect(loop, timeouts.get("connect"), made)
        except BaseException:
            if made:
                # Its socket opened before the failure, so connection_lost may count the
                # slot out too: closing counts it out once either way.
                made[0].close()
            else:
                self._open -= 1
                self._wake_one()
            raise

    async def _wait_for_turn(
        self, loop: asyncio.AbstractEventLoop, timeout: float | None
    ) -> Connection | None:
        """A connection handed over by its last user, or None: a slot to open one in."""
        turn: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append(turn)
        try:
            async with asyncio.timeout(timeout):
                return await turn
        except TimeoutError:
            if turn.done() and not turn.cancelled():
                return turn.result()  # the turn came in the same loop turn as the timeout
            raise httpx.PoolTimeout("timed out waiting for a pooled connection") from None
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                # Handed a connection or a slot just as we gave up: pass it on.
                handed = turn.result()
                if handed is not None:
                    self.release(handed)
                else:
                    self._open -= 1
                    self._wake_one()
            raise
        finally:
            if not turn.done():
                turn.cancel()
            if turn in self._waiters:
                self._waiters.remove(turn)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, timeout: float | None, made: list[Connection]
    ) -> Connection:
        """A new connection; `made` holds it as soon as it exists, even if opening fails."""
        origin = self.origin

        def make() -> Connection:
            made.append(Connection(self.forget))
            return made[0]

        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    make,
                    origin.host,
                    origin.port,
                    ssl=_ssl_context() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None,
                )
                self._connections.add(connection)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {origin.authority}") from None
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(f"could not connect to {origin.authority}: {error}") from error
        return connection

    def release(self, connection: Connection) -> None:
        """Keep the connection for the next request if it can carry one; else close it."""
        if not connection.reusable or self.closed:
            connection.close()
            return
        connection.rest()
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(connection)
                return
        if len(self._idle) >= self._idle_limit:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)

    def forget(self, connection: Connection) -> None:
        """A connection closed: its slot is free."""
        if connection.forget_once():
            self._open -= 1
            self._connections.discard(connection)
            if connection in self._idle:
                self._idle.remove(connection)
            self._wake_one()

    def _wake_one(self) -> None:
        """A slot is free: reserve it for the first waiter, which will open a connection."""
        if self._open >= self._limit:
            return
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                self._open += 1
                turn.set_result(None)
                return

    def close(self) -> None:
        """Close every connection, idle or in use (an answer still streaming ends), and
        fail the requests waiting for one."""
        self.closed = True
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_exception(httpx.ConnectError("the transport is closed"))
        for connection in list(self._connections):
            connection.close()
        self._idle.clear()


class Http1Body(httpx.AsyncByteStream):
    """An answer's body as it arrives. `read_chunk` is the fast way to read it; the
    connection goes back to the pool as soon as the body has been read to its end."""

    def __init__(self, pool: _Pool, connection: Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._connection: Connection | None = connection
        self._read_timeout = read_timeout

    async def read_chunk(self) -> bytes:
        connection = self._connection
        if connection is None:
            return b""
        try:
            chunk = await connection.read_chunk(self._read_timeout)
        except BaseException:
            self._connection = None
            connection.close()
            raise
        if not chunk:
            self.release()
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk():
            yield chunk

    def release(self) -> None:
        """Back to the pool when the body was read to its end; closed otherwise."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)

    async def aclose(self) -> None:
        self.release()


class Http1Transport(httpx.AsyncBaseTransport):
    """Sends requests over keep-alive HTTP/1.1 connections, one pool per origin."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry_seconds: float,
        max_keepalive: int | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.max_keepalive = max_connections if max_keepalive is None else max_keepalive
        self.keepalive_expiry_seconds = keepalive_expiry_seconds
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._closed = False

    def _pool_for(self, scheme: str, authority: str) -> _Pool:
        pool = self._pools.get((scheme, authority))
        if pool is None:
            pool = self._pools[(scheme, authority)] = _Pool(
                _Origin(scheme, authority),
                limit=self.max_connections,
                idle_limit=self.max_keepalive,
                expiry=self.keepalive_expiry_seconds,
            )
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream
        # Framing is set again from the body; a streamed body keeps its declared length.
        dropped = {b"transfer-encoding", b"host"}
        if not isinstance(data, AsyncIterable):
            dropped.add(b"content-length")
        headers = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in request.headers.raw
            if key.lower() not in dropped
        ]
        timeout = request.extensions.get("timeout", {})
        response = await self.send(request.method, str(request.url), headers, data, timeout)
        response.request = request
        return response

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        data: Any,
        timeout: dict[str, float | None],
    ) -> httpx.Response:
        """Send without building an httpx.Request first: the proxy's hot path.

        `url` is sent as written (already percent-encoded). Host is set from it unless
        `headers` carry one; Content-Length or chunked framing from the body unless
        `headers` carry a Content-Length.
        """
        scheme, authority, target = _split_url(url)
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        pool = self._pool_for(scheme, authority)
        body = data.encode() if isinstance(data, str) else data
        head, streamed = request_head(method, target, authority, headers, body)
        connection = await pool.acquire(timeout)
        connection.start_exchange(method)
        try:
            if streamed is None:
                connection.write(head + body if body else head)
                await connection.drain(timeout.get("write"))
            else:
                connection.write(head)
                await send_body(connection, streamed, timeout.get("write"))
            await connection.read_head(timeout.get("read"))
        except BaseException:
            connection.close()
            raise
        return httpx.Response(
            status_code=connection.status,
            headers=connection.headers,
            stream=Http1Body(pool, connection, timeout.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        # A closed transport lets go of its socket on the loop's next turn; take that turn,
        # so that every socket is closed when this returns.
        await asyncio.sleep(0)
