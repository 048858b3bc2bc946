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
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, cast

import httptools
import httpx

# Methods that send "content-length: 0" when they have no body, as browsers and most
# clients do; some servers answer 411 to a bodiless POST without it.
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
# A method and a header name are tokens; a header value holds no CR, LF or NUL (RFC 9110
# 5.1, 5.5, 9.1); the request target no space or control character (RFC 9112 3).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")
# Answers are read ahead up to this much; beyond it the socket is paused until the
# reader catches up, so a slow client never makes bizproxy hold a large body.
_READ_AHEAD_BYTES = 256 * 1024
_WRITE_CHUNK_BYTES = 64 * 1024
# An answer's head (with any 1xx heads before it) must end within this much; llhttp sets
# no limit of its own.
_MAX_HEAD_BYTES = 64 * 1024

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


class _Connection(asyncio.Protocol):
    """One keep-alive connection to one origin; one exchange at a time."""

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.lost_error: BaseException | None = None
        self.idle_since = 0.0
        self._forgotten = False
        self._closed_here = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._new_exchange("GET")

    def _new_exchange(self, method: str) -> None:
        self.method = method
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_ready = False
        self.complete = False
        self.keep_alive = True
        self.until_close = False
        self.stray = False
        self.parse_error: Exception | None = None
        self._head_bytes = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._read_paused = False
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.complete or self.parse_error is not None:
            # Bytes after a complete answer (or HEAD's head): nothing we asked for, so the
            # connection's framing can no longer be trusted.
            self.keep_alive = False
            if self.transport is not None:
                self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            self._refuse(error)
            return
        if not self.head_ready:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD_BYTES:
                self._refuse(ValueError(f"the answer's head is over {_MAX_HEAD_BYTES} bytes"))

    def _refuse(self, reason: Exception) -> None:
        if self.parse_error is None:
            self.parse_error = reason
        self.keep_alive = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_error = exc
        self.keep_alive = False
        if self.until_close and self.head_ready and exc is None:
            self.complete = True
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._pool.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second answer to one request, in the same packet as the first.
            self.stray = True
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.stray:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.stray:
            return
        status = self.parser.get_status_code()
        if status == 101:
            self._refuse(ValueError("it switched protocols (101), which bizproxy never asks for"))
            return
        if 100 <= status < 200:
            # An informational answer (100 Continue, 103 Early Hints): the real one follows.
            self.headers = []
            return
        coding = b", ".join(v for n, v in self.headers if n.lower() == b"transfer-encoding")
        if coding and coding.strip().lower() != b"chunked" and self.method != "HEAD":
            # Only chunked is undone here; passed on, any other would garble the body.
            shown = coding.decode("latin-1")
            self._refuse(ValueError(f"its transfer coding {shown!r} is not chunked"))
            return
        self.status = status
        self.head_ready = True
        self.keep_alive = self.parser.should_keep_alive()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # stop sending: the answer has begun
        if self.method == "HEAD":
            # llhttp cannot be told the request was HEAD: the answer ends with its head.
            self.complete = True
            self.parse_error = None
        elif status not in (204, 304) and not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        ):
            self.until_close = True
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            # A body after a HEAD answer's head: the rest of it may come later, and would
            # be read as the answer to the next request.
            self.keep_alive = False
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _READ_AHEAD_BYTES and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_ready and not self.stray:
            self.complete = True
            self._wake()

    # -- used by the transport -------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None, on_timeout: type[httpx.TimeoutException]) -> None:
        waiter = self._waiter = self._loop.create_future()
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, _expire, waiter, on_timeout)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise httpx.WriteError("the upstream closed the connection while it was sent to")
        self.transport.write(data)

    async def drain(self, timeout: float | None) -> None:
        """Wait until the socket takes more, or the answer began (then stop sending)."""
        if not self._write_paused or self.head_ready:
            return
        drained = self._drained = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await drained
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request") from None
        finally:
            self._drained = None
        if self.lost and not self.head_ready:
            raise httpx.WriteError("the upstream closed the connection while it was sent to")

    async def read_head(self, timeout: float | None) -> None:
        while not self.head_ready:
            self._raise_if_broken(before_head=True)
            await self._wait(timeout, httpx.ReadTimeout)

    async def read_chunk(self, timeout: float | None) -> bytes:
        """Everything received of the body so far, or after a wait; b"" at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft() if len(self._chunks) == 1 else self._take_all()
                self._buffered -= len(chunk)
                if self._read_paused and self._buffered <= _READ_AHEAD_BYTES // 2:
                    self._read_paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                return chunk
            if self.complete:
                return b""
            self._raise_if_broken(before_head=False)
            await self._wait(timeout, httpx.ReadTimeout)

    def _take_all(self) -> bytes:
        chunk = b"".join(self._chunks)
        self._chunks.clear()
        return chunk

    def _raise_if_broken(self, *, before_head: bool) -> None:
        if self.parse_error is not None:
            raise httpx.RemoteProtocolError(f"the upstream broke HTTP/1.1: {self.parse_error}")
        if not self.lost:
            return
        if before_head:
            if self._closed_here:
                raise httpx.ReadError("the transport was closed before the upstream answered")
            if isinstance(self.lost_error, ConnectionResetError):
                raise httpx.ReadError("the upstream reset the connection before answering")
            raise httpx.RemoteProtocolError("the upstream closed the connection without answering")
        raise httpx.ReadError("the connection closed before the answer's body was complete")

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.lost and self.parse_error is None

    def rest(self) -> None:
        """Between exchanges: drop what was left unread and read again, so that the
        upstream's close (or stray bytes) is seen while the connection is idle."""
        self._chunks.clear()
        self._buffered = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._closed_here = True
            self.transport.close()
        self._pool.forget(self)

    def forget_once(self) -> bool:
        """True the first time only: the pool counts each connection out once."""
        if self._forgotten:
            return False
        self._forgotten = True
        return True


def _expire(waiter: asyncio.Future[None], error: type[httpx.TimeoutException]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out waiting for the upstream"))


class _Pool:
    """The connections to one origin."""

    def __init__(self, origin: _Origin, *, limit: int, idle_limit: int, expiry: float) -> None:
        self.origin = origin
        self._limit = limit
        self._idle_limit = idle_limit
        self._expiry = expiry
        self._idle: list[_Connection] = []
        self._connections: set[_Connection] = set()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self.closed = False

    async def acquire(self, timeouts: dict[str, float | None]) -> _Connection:
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
        made: list[_Connection] = []
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
    ) -> _Connection | None:
        """A connection handed over by its last user, or None: a slot to open one in."""
        turn: asyncio.Future[_Connection | None] = loop.create_future()
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
        self, loop: asyncio.AbstractEventLoop, timeout: float | None, made: list[_Connection]
    ) -> _Connection:
        """A new connection; `made` holds it as soon as it exists, even if opening fails."""
        origin = self.origin

        def make() -> _Connection:
            made.append(_Connection(self))
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

    def release(self, connection: _Connection) -> None:
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

    def forget(self, connection: _Connection) -> None:
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

    def __init__(self, pool: _Pool, connection: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
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
        head, streamed = _request_head(method, target, authority, headers, body)
        connection = await pool.acquire(timeout)
        connection._new_exchange(method)
        try:
            if streamed is None:
                connection.write(head + body if body else head)
            else:
                connection.write(head)
                await _send_body(connection, streamed, timeout.get("write"))
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


_Streamed = tuple[AsyncIterable[bytes], int | None]
"""A body to stream, and its declared length (None: it goes chunked)."""


def _request_head(
    method: str,
    target: str,
    authority: str,
    headers: list[tuple[str, str]],
    body: bytes | AsyncIterable[bytes] | None,
) -> tuple[bytes, _Streamed | None]:
    if not _TOKEN.fullmatch(method):
        raise httpx.LocalProtocolError(f"method {method!r} cannot be sent: it is not a token")
    if _UNSAFE_TARGET.search(target):
        raise httpx.InvalidURL(
            f"URL path {target!r} cannot be sent: it holds a space or a control character"
        )
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    has_host = False
    declared: int | None = None
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
            raise httpx.LocalProtocolError(f"header {name!r} cannot be sent: invalid name or value")
        lowered = name.lower()
        if lowered == "host":
            has_host = True
        elif lowered == "content-length":
            declared = _declared_length(value, declared)
        elif lowered == "transfer-encoding":
            continue
        lines.append(f"{name}: {value}\r\n")
    if not has_host:
        lines.insert(1, f"host: {authority}\r\n")
    streamed: _Streamed | None = None
    size = len(body) if isinstance(body, bytes) else 0 if body is None else None
    if declared is not None and size is not None and declared != size:
        raise httpx.LocalProtocolError(
            f"header 'content-length' says {declared} bytes, the body has {size}"
        )
    if isinstance(body, bytes):
        if declared is None:
            lines.append(f"content-length: {len(body)}\r\n")
    elif body is not None:
        streamed = (body, declared)
        if declared is None:
            lines.append("transfer-encoding: chunked\r\n")
    elif declared is None and method not in _BODYLESS_METHODS:
        lines.append("content-length: 0\r\n")
    lines.append("\r\n")
    try:
        return "".join(lines).encode("latin-1"), streamed
    except UnicodeEncodeError as error:
        raise httpx.LocalProtocolError(f"the request head is not Latin-1: {error}") from None


def _declared_length(value: str, before: int | None) -> int:
    if not (value.isascii() and value.isdigit()) or before not in (None, int(value)):
        raise httpx.LocalProtocolError(f"header 'content-length' cannot be sent as {value!r}")
    return int(value)


async def _send_body(
    connection: _Connection, streamed: _Streamed, write_timeout: float | None
) -> None:
    """Stream the body with backpressure; stop early if the upstream already answered."""
    body, declared = streamed
    chunked = declared is None
    sent = 0
    try:
        async for chunk in body:
            for start in range(0, len(chunk), _WRITE_CHUNK_BYTES):
                if connection.head_ready:
                    # Answered before the body was all sent (a 413, say): the rest is
                    # moot, and the connection cannot carry another request.
                    connection.keep_alive = False
                    return
                piece = chunk[start : start + _WRITE_CHUNK_BYTES]
                sent += len(piece)
                if declared is not None and sent > declared:
                    raise httpx.LocalProtocolError(
                        f"the request body is longer than its content-length {declared}"
                    )
                connection.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                await connection.drain(write_timeout)
    except httpx.TransportError:
        raise
    except Exception as error:
        # The body's source failed (the client went away, or sent too much): the upstream
        # got part of a request, so this connection is done.
        raise httpx.WriteError(f"the request body could not be read: {error}") from error
    if sent == declared:
        return
    if connection.head_ready:
        # Answered before the body's end went out: the upstream may still wait for it.
        connection.keep_alive = False
    elif chunked:
        connection.write(b"0\r\n\r\n")
    else:
        raise httpx.LocalProtocolError(
            f"the request body ended after {sent} of its {declared} declared bytes"
        )
