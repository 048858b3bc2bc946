"""One HTTP/1.1 connection to an upstream: the protocol that reads answers (parsed by
httptools) and the writing of requests onto it. Pooling lives in `http1`."""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import AsyncIterable, Callable
from typing import cast

import httptools
import httpx

# Methods that send "content-length: 0" when they have no body, as browsers and most
# clients do; some servers answer 411 to a bodiless POST without it.
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
# A method and a header name are tokens; a header value holds no CR, LF or NUL (RFC 9110
# 5.1, 5.5, 9.1); the request target no space or control character (RFC 9112 3).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")
# Answers are read ahead up to this much; beyond it the socket is paused until the
# reader catches up, so a slow client never makes bizproxy hold a large body.
_READ_AHEAD_BYTES = 256 * 1024
_WRITE_CHUNK_BYTES = 64 * 1024
# An answer's head (with any 1xx heads before it) must end within this much; llhttp sets
# no limit of its own.
_MAX_HEAD_BYTES = 64 * 1024


class Connection(asyncio.Protocol):
    """One keep-alive connection to one origin; one exchange at a time."""

    def __init__(self, on_closed: Callable[[Connection], None]) -> None:
        self._on_closed = on_closed
        """Told once the connection is closed, by either side: its pool slot is free."""
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.lost_error: BaseException | None = None
        self.idle_since = 0.0
        self._forgotten = False
        self._closed_here = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.start_exchange("GET")

    def start_exchange(self, method: str) -> None:
        """A fresh parser and answer state, for the request about to go out."""
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
        self._on_closed(self)

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
        # After the head, fields are a chunked body's trailer: dropped, never headers.
        if not self.stray and not self.head_ready:
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
        self._on_closed(self)

    def forget_once(self) -> bool:
        """True the first time only: the pool counts each connection out once."""
        if self._forgotten:
            return False
        self._forgotten = True
        return True


def _expire(waiter: asyncio.Future[None], error: type[httpx.TimeoutException]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out waiting for the upstream"))


Streamed = tuple[AsyncIterable[bytes], int | None]
"""A body to stream, and its declared length (None: it goes chunked)."""


# Header names and methods repeat from request to request: each is checked once.
_KNOWN_TOKENS: set[str] = set()
_KNOWN_TOKENS_LIMIT = 4096


def _is_token(text: str) -> bool:
    if text in _KNOWN_TOKENS:
        return True
    if _TOKEN.fullmatch(text) is None:
        return False
    if len(_KNOWN_TOKENS) < _KNOWN_TOKENS_LIMIT:
        _KNOWN_TOKENS.add(text)
    return True


def request_head(
    method: str,
    target: str,
    authority: str,
    headers: list[tuple[str, str]],
    body: bytes | AsyncIterable[bytes] | None,
) -> tuple[bytes, Streamed | None]:
    if not _is_token(method):
        raise httpx.LocalProtocolError(f"method {method!r} cannot be sent: it is not a token")
    if _UNSAFE_TARGET.search(target):
        raise httpx.InvalidURL(
            f"URL path {target!r} cannot be sent: it holds a space or a control character"
        )
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    has_host = False
    declared: int | None = None
    for name, value in headers:
        if not _is_token(name) or "\r" in value or "\n" in value or "\x00" in value:
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
    streamed: Streamed | None = None
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


async def send_body(
    connection: Connection, streamed: Streamed, write_timeout: float | None
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
