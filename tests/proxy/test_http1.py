"""bizproxy's outbound HTTP/1.1 transport against real sockets: pooling, framing, failures.

The upstreams here are raw asyncio servers that answer with exact bytes, so each test
decides what goes over the wire, and sees what bizproxy sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from bizproxy import ConnectionFailure, HTTPXFastAPIProxy, UpstreamTimeout, http1, http1_connection
from bizproxy.http1 import Http1Body, Http1Transport, _Pool
from bizproxy.policies.retry import NO_RETRY
from bizproxy.proxy import PoolLimits, Timeouts
from tests.support.servers import serve_app, serve_raw

TIMEOUTS = httpx.Timeout(5.0).as_dict()
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Seen:
    """What a raw upstream saw: connections opened, requests read, most at once."""

    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request's head and body (by Content-Length or chunked); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.lower().split(b"\r\n")
    length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
    if b"transfer-encoding: chunked" in lines:
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size + 2)
            body = body[:-2]
        await reader.readuntil(b"\r\n")
        return head, body
    return head, await reader.readexactly(length) if length else b""


Answer = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]
"""Writes the answer to one request; returns False to close the connection."""


def answering(answer: bytes, *, delay: float = 0.0, close: bool = False) -> Answer:
    async def write(_head: bytes, _body: bytes, writer: asyncio.StreamWriter) -> bool:
        if delay:
            await asyncio.sleep(delay)
        writer.write(answer)
        await writer.drain()
        return not close

    return write


@contextlib.contextmanager
def upstream(answer: Answer) -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.open_now += 1
        seen.most_open = max(seen.most_open, seen.open_now)
        try:
            while (request := await read_request(reader)) is not None:
                seen.requests.append(request)
                if not await answer(*request, writer):
                    break
        except ConnectionError:
            pass
        finally:
            seen.open_now -= 1
            writer.close()

    with serve_raw(handle) as url:
        yield url, seen


@contextlib.asynccontextmanager
async def transport(**limits: float) -> AsyncIterator[Http1Transport]:
    settings = {"max_connections": 10, "max_keepalive": 10, "keepalive_expiry_seconds": 5.0}
    settings.update(limits)
    made = Http1Transport(
        max_connections=int(settings["max_connections"]),
        max_keepalive=int(settings["max_keepalive"]),
        keepalive_expiry_seconds=settings["keepalive_expiry_seconds"],
    )
    try:
        yield made
    finally:
        await made.aclose()


async def get(
    client: Http1Transport,
    url: str,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    content: object = None,
) -> tuple[int, bytes]:
    response = await client.send(method, url, headers or [], content, TIMEOUTS)
    body = response.stream
    assert isinstance(body, Http1Body)
    chunks = []
    while chunk := await body.read_chunk():
        chunks.append(chunk)
    return response.status_code, b"".join(chunks)


async def test_http1_reuses_one_connection_for_requests_in_turn() -> None:
    with upstream(answering(OK)) as (url, seen):
        async with transport() as client:
            for _ in range(5):
                assert await get(client, f"{url}/x") == (200, b"ok")
    assert seen.connections == 1
    assert len(seen.requests) == 5


async def test_http1_opens_at_most_max_connections() -> None:
    with upstream(answering(OK, delay=0.1)) as (url, seen):
        async with transport(max_connections=2) as client:
            answers = await asyncio.gather(*(get(client, f"{url}/x") for _ in range(6)))
    assert answers == [(200, b"ok")] * 6
    assert seen.most_open == 2
    assert seen.connections == 2


async def test_http1_waiting_for_a_pooled_connection_times_out_as_pool_phase() -> None:
    with upstream(answering(OK, delay=1.0)) as (url, _seen):
        timeouts = Timeouts(pool_seconds=0.1)
        pool = PoolLimits(max_connections=1)
        async with HTTPXFastAPIProxy(url, NO_RETRY, timeouts=timeouts, pool=pool) as proxy:
            slow = asyncio.create_task(proxy.request("GET", "/slow"))
            await asyncio.sleep(0.2)
            with pytest.raises(UpstreamTimeout) as caught:
                await proxy.request("GET", "/waits")
            assert caught.value.phase == "pool"
            answer = await slow
            assert (answer.status_code, await answer.aread()) == (200, b"ok")
            await answer.aclose()


async def test_http1_keeps_no_idle_connection_with_max_keepalive_zero() -> None:
    with upstream(answering(OK)) as (url, seen):
        async with transport(max_keepalive=0) as client:
            for _ in range(3):
                assert await get(client, f"{url}/x") == (200, b"ok")
    assert seen.connections == 3


async def test_http1_closes_idle_connections_after_the_keepalive_expiry() -> None:
    with upstream(answering(OK)) as (url, seen):
        async with transport(keepalive_expiry_seconds=0.1) as client:
            await get(client, f"{url}/x")
            await get(client, f"{url}/x")
            await asyncio.sleep(0.25)
            await get(client, f"{url}/x")
    assert seen.connections == 2


async def test_http1_replaces_an_idle_connection_the_upstream_closed() -> None:
    with upstream(answering(OK, close=True)) as (url, seen):
        async with transport() as client:
            assert await get(client, f"{url}/x") == (200, b"ok")
            await asyncio.sleep(0.1)
            assert await get(client, f"{url}/x") == (200, b"ok")
    assert seen.connections == 2


async def test_http1_reads_a_chunked_answer_and_reuses_the_connection() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    with upstream(answering(chunked)) as (url, seen):
        async with transport() as client:
            assert await get(client, f"{url}/x") == (200, b"abcde")
            assert await get(client, f"{url}/x") == (200, b"abcde")
    assert seen.connections == 1


async def test_http1_reads_an_answer_without_length_until_close() -> None:
    with upstream(answering(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True)) as (url, seen):
        async with transport() as client:
            assert await get(client, f"{url}/x") == (200, b"until the end")
            assert await get(client, f"{url}/x") == (200, b"until the end")
    assert seen.connections == 2


async def test_http1_head_answer_ends_with_its_head() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    with upstream(answering(head)) as (url, seen):
        async with transport() as client:
            assert await get(client, f"{url}/x", method="HEAD") == (200, b"")
            assert await get(client, f"{url}/x", method="HEAD") == (200, b"")
    assert seen.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_http1_answers_that_cannot_have_a_body_end_at_once(status: int) -> None:
    with upstream(answering(f"HTTP/1.1 {status} X\r\n\r\n".encode())) as (url, seen):
        async with transport() as client:
            assert await get(client, f"{url}/x") == (status, b"")
            assert await get(client, f"{url}/x") == (status, b"")
    assert seen.connections == 1


async def test_http1_skips_informational_answers() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
    with upstream(answering(answer)) as (url, _seen):
        async with transport() as client:
            assert await get(client, f"{url}/x", method="POST", content=b"body") == (201, b"ok")


async def test_http1_sends_only_host_framing_and_the_given_headers() -> None:
    with upstream(answering(OK)) as (url, seen):
        async with transport() as client:
            await get(client, f"{url}/a%2Fb?q=%20x&q=", headers=[("x-one", "1")])
            await get(client, f"{url}/post", method="POST", headers=[("x-two", "2")])
            await get(client, f"{url}/put", method="PUT", content=b"12345")
    host = url.removeprefix("http://").encode()
    assert [head for head, _ in seen.requests] == [
        b"GET /a%2Fb?q=%20x&q= HTTP/1.1\r\nhost: " + host + b"\r\nx-one: 1\r\n\r\n",
        b"POST /post HTTP/1.1\r\nhost: " + host + b"\r\nx-two: 2\r\ncontent-length: 0\r\n\r\n",
        b"PUT /put HTTP/1.1\r\nhost: " + host + b"\r\ncontent-length: 5\r\n\r\n",
    ]
    assert seen.requests[2][1] == b"12345"


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


async def test_http1_streams_a_body_chunked_or_with_its_declared_length() -> None:
    with upstream(answering(OK)) as (url, seen):
        async with transport() as client:
            await get(client, f"{url}/chunked", method="POST", content=pieces(b"ab", b"", b"cd"))
            declared = [("content-length", "4")]
            await get(
                client,
                f"{url}/sized",
                method="POST",
                headers=declared,
                content=pieces(b"wx", b"yz"),
            )
    (chunked_head, chunked_body), (sized_head, sized_body) = seen.requests
    assert b"transfer-encoding: chunked\r\n" in chunked_head and chunked_body == b"abcd"
    assert b"content-length: 4\r\n" in sized_head and b"transfer-encoding" not in sized_head
    assert sized_body == b"wxyz"


async def test_http1_stops_uploading_when_the_upstream_answers_early() -> None:
    async def refuse_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Too Large\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbig")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 256 * 1024 * 1024:
            sent += 1024 * 1024
            yield b"x" * (1024 * 1024)

    with serve_raw(refuse_at_once) as url:
        async with transport() as client:
            status, body = await get(client, f"{url}/upload", method="POST", content=endless())
    assert (status, body) == (413, b"big")
    assert sent < 64 * 1024 * 1024


async def test_http1_malformed_answer_is_a_reset_connection_failure() -> None:
    with upstream(answering(b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n")) as (url, _seen):
        async with HTTPXFastAPIProxy(url, NO_RETRY) as proxy:
            with pytest.raises(ConnectionFailure) as caught:
                await proxy.request("GET", "/x")
    assert caught.value.kind == "reset"
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert "broke HTTP/1.1" in str(caught.value.__cause__)


async def test_http1_answer_cut_short_raises_read_error() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"
    with upstream(answering(cut, close=True)) as (url, _seen):
        async with transport() as client:
            response = await client.send("GET", f"{url}/x", [], None, TIMEOUTS)
            body = response.stream
            assert isinstance(body, Http1Body)
            assert await body.read_chunk() == b"only ten b"
            with pytest.raises(httpx.ReadError, match="before the answer's body was complete"):
                await body.read_chunk()


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["same-packet", "later"])
async def test_http1_bytes_after_an_answer_retire_the_connection(pause: float) -> None:
    stray = b"HTTP/1.1 500 Stray\r\ncontent-length: 0\r\n\r\n"

    async def answer_twice(_head: bytes, _body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)
        if pause:
            await writer.drain()
            await asyncio.sleep(pause)
        writer.write(stray)
        await writer.drain()
        return True

    with upstream(answer_twice) as (url, seen):
        async with transport() as client:
            assert await get(client, f"{url}/x") == (200, b"ok")
            await asyncio.sleep(0.1)
            assert await get(client, f"{url}/x") == (200, b"ok")
    assert seen.connections == 2


@pytest.mark.parametrize(
    ("name", "value"), [("x-evil", "a\r\nx-injected: 1"), ("bad name", "v"), ("x-nul", "a\x00")]
)
async def test_http1_refuses_headers_that_would_break_the_request(name: str, value: str) -> None:
    with upstream(answering(OK)) as (url, seen):
        async with transport() as client:
            with pytest.raises(httpx.LocalProtocolError, match=f"header {name!r} cannot be sent"):
                await get(client, f"{url}/x", headers=[(name, value)])
    assert seen.requests == []


async def test_http1_closing_the_transport_closes_connections_in_use() -> None:
    slow = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf"
    with upstream(answering(slow)) as (url, _seen):
        client = Http1Transport(max_connections=2, max_keepalive=2, keepalive_expiry_seconds=5)
        response = await client.send("GET", f"{url}/x", [], None, TIMEOUTS)
        body = response.stream
        assert isinstance(body, Http1Body)
        assert await body.read_chunk() == b"half"
        await client.aclose()
        with pytest.raises(httpx.ReadError):
            await body.read_chunk()


async def test_http1_default_pool_keeps_every_connection_a_burst_opened() -> None:
    """Unset max_keepalive keeps up to max_connections idle: a second burst reuses them all."""
    with upstream(answering(OK, delay=0.05)) as (url, seen):
        async with HTTPXFastAPIProxy(url, NO_RETRY) as proxy:
            for _ in range(2):
                answers = await asyncio.gather(*(proxy.request("GET", "/x") for _ in range(30)))
                for answer in answers:
                    assert await answer.aread() == b"ok"
                    await answer.aclose()
    assert seen.connections == 30
    assert len(seen.requests) == 60


def pool_of(client: Http1Transport) -> _Pool:
    """The transport's only pool (white-box: counts are not visible from outside)."""
    (pool,) = client._pools.values()
    return pool


async def test_http1_connection_handed_over_as_the_pool_timeout_fires_is_kept() -> None:
    """A connection released to a waiter in the same turn its pool timeout fires is not lost."""
    with upstream(answering(OK)) as (url, seen):
        async with transport(max_connections=1) as client:
            first = await client.send("GET", f"{url}/x", [], None, TIMEOUTS)
            body = first.stream
            assert isinstance(body, Http1Body) and await body.read_chunk() == b"ok"
            loop = asyncio.get_running_loop()
            waiting = asyncio.create_task(
                client.send("GET", f"{url}/x", [], None, {**TIMEOUTS, "pool": 0.3})
            )
            await asyncio.sleep(0)
            # Block the loop past the pool timeout, so that the release (due first) and
            # the timeout run in one turn, before the waiter resumes.
            loop.call_later(0.01, time.sleep, 0.5)
            loop.call_later(0.02, body.release)
            handed = (await waiting).stream
            assert isinstance(handed, Http1Body) and await handed.read_chunk() == b"ok"
            assert await handed.read_chunk() == b""
            assert pool_of(client)._open == 1
            assert await get(client, f"{url}/x") == (200, b"ok")
    assert seen.connections == 1


async def test_http1_answer_left_unread_while_reading_paused_leaves_a_working_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole answer closed unread past the read-ahead limit leaves its connection reading."""
    monkeypatch.setattr(http1_connection, "_READ_AHEAD_BYTES", 4)
    with upstream(answering(b"HTTP/1.1 503 Busy\r\ncontent-length: 10\r\n\r\n0123456789")) as (
        url,
        seen,
    ):
        async with transport() as client:
            discarded = await client.send("GET", f"{url}/x", [], None, TIMEOUTS)
            await discarded.aclose()
            quick = {**TIMEOUTS, "read": 1.0}
            again = await client.send("GET", f"{url}/x", [], None, quick)
            assert again.status_code == 503
            await again.aclose()
    assert seen.connections == 1


async def test_http1_chunked_upload_answered_before_its_end_retires_the_connection() -> None:
    """An answer that comes before the chunked body's terminator went out ends the connection."""
    connections = 0

    async def answer_on_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(OK)
                await writer.drain()

    with serve_raw(answer_on_head) as url:
        async with transport() as client:

            async def until_answered() -> AsyncIterator[bytes]:
                yield b"a"
                (connection,) = pool_of(client)._connections
                while not connection.head_ready:
                    await asyncio.sleep(0.01)

            body = until_answered()
            assert await get(client, f"{url}/up", "POST", content=body) == (200, b"ok")
            assert await get(client, f"{url}/x") == (200, b"ok")
    assert connections == 2


async def test_http1_head_answer_followed_by_body_bytes_retires_the_connection() -> None:
    """Bytes after a HEAD answer's head, even in its packet, keep the connection from reuse."""
    forged = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged"
    body = b"x" * 10 + forged
    connections = 0

    async def head_with_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections > 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal")
            await writer.drain()
            return
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body[:10]))
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(body[10:])
            await writer.drain()

    with serve_raw(head_with_body) as url:
        async with transport() as client:
            assert await get(client, f"{url}/x", "HEAD") == (200, b"")
            assert await get(client, f"{url}/x") == (200, b"real")
    assert connections == 2


async def test_http1_answer_head_without_end_is_refused_past_its_limit() -> None:
    """An answer head that grows past 64 KiB without ending is a protocol error, not memory."""

    async def endless_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: ")
        with contextlib.suppress(ConnectionError):
            for _ in range(64):
                writer.write(b"a" * 16384)
                await writer.drain()
            await reader.read()

    with serve_raw(endless_head) as url:
        async with transport() as client:
            timeouts = {**TIMEOUTS, "read": 2.0}
            with pytest.raises(httpx.RemoteProtocolError, match="head is over 65536 bytes"):
                await client.send("GET", f"{url}/x", [], None, timeouts)


async def test_http1_connect_timeout_after_the_socket_opened_frees_its_slot_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connect that times out once the socket is open counts its slot free once, not twice."""
    made = http1_connection.Connection.__init__

    def slow_to_make(self: http1_connection.Connection, on_closed: Callable[[Any], None]) -> None:
        # Blocks the loop past the connect timeout while the socket is already open, so
        # the timeout fires before create_connection returns, and it closes the socket.
        time.sleep(0.3)
        made(self, on_closed)

    with upstream(answering(OK, delay=0.1)) as (url, seen):
        async with transport(max_connections=1) as client:
            monkeypatch.setattr(http1_connection.Connection, "__init__", slow_to_make)
            with pytest.raises(httpx.ConnectTimeout):
                await client.send("GET", f"{url}/x", [], None, {**TIMEOUTS, "connect": 0.05})
            monkeypatch.undo()
            await asyncio.sleep(0.05)
            assert pool_of(client)._open == 0
            answers = await asyncio.gather(get(client, f"{url}/x"), get(client, f"{url}/x"))
    assert answers == [(200, b"ok")] * 2
    assert seen.most_open == 1


async def test_http1_closed_transport_refuses_new_requests() -> None:
    """After aclose a request fails as not connected instead of opening a socket no one closes."""
    with upstream(answering(OK)) as (url, seen):
        client = Http1Transport(max_connections=2, keepalive_expiry_seconds=5)
        assert await get(client, f"{url}/x") == (200, b"ok")
        await client.aclose()
        with pytest.raises(httpx.ConnectError, match="the transport is closed"):
            await client.send("GET", f"{url}/x", [], None, TIMEOUTS)
    assert seen.connections == 1


async def test_http1_closing_the_transport_fails_requests_waiting_for_a_connection() -> None:
    """A request waiting for a pooled connection when the transport closes opens none."""
    with upstream(answering(OK, delay=0.2)) as (url, seen):
        client = Http1Transport(max_connections=1, keepalive_expiry_seconds=5)
        first = asyncio.create_task(client.send("GET", f"{url}/x", [], None, TIMEOUTS))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(client.send("GET", f"{url}/x", [], None, TIMEOUTS))
        await asyncio.sleep(0.05)
        await client.aclose()
        with pytest.raises(httpx.ReadError, match="transport was closed before the upstream"):
            await first
        with pytest.raises(httpx.ConnectError, match="the transport is closed"):
            await waiting
    assert seen.connections == 1


@pytest.mark.parametrize("path", ["/a b", "/a\r\nx-injected: 1", "/a\x00", "/a\tb"])
async def test_http1_refuses_a_target_that_would_break_the_request_line(path: str) -> None:
    """A URL with a space or a control character is refused before anything is sent."""
    with upstream(answering(OK)) as (url, seen):
        async with transport() as client:
            with pytest.raises(httpx.InvalidURL, match="cannot be sent"):
                await get(client, f"{url}{path}")
    assert seen.requests == []


@pytest.mark.parametrize("method", ["GET /x HTTP/1.1\r\nx:", "GE T", ""])
async def test_http1_refuses_a_method_that_is_not_a_token(method: str) -> None:
    """A method that is not an HTTP token is refused before anything is sent."""
    with upstream(answering(OK)) as (url, seen):
        async with transport() as client:
            with pytest.raises(httpx.LocalProtocolError, match="cannot be sent"):
                await get(client, f"{url}/x", method=method)
    assert seen.requests == []


@pytest.mark.parametrize("coding", ["gzip", "gzip, chunked", "chunked, gzip"])
async def test_http1_answer_in_a_transfer_coding_other_than_chunked_is_refused(
    coding: str,
) -> None:
    """A transfer coding the transport cannot undo is a protocol error, not a garbled body."""
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: %b\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    with upstream(answering(answer % coding.encode(), close=True)) as (url, _seen):
        async with transport() as client:
            with pytest.raises(httpx.RemoteProtocolError, match=f"coding {coding!r}"):
                await get(client, f"{url}/x")


@pytest.mark.parametrize("connection", [b"", b"connection: upgrade\r\n"])
async def test_http1_switching_protocols_is_refused(
    connection: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A 101 answer (bizproxy never asks for an upgrade) is a protocol error that says so."""
    answer = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n%b\r\n" % connection
    with upstream(answering(answer)) as (url, _seen):
        async with transport() as client:
            with pytest.raises(httpx.RemoteProtocolError, match="switched protocols"):
                await get(client, f"{url}/x")
    assert caplog.records == []


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ((b"wx", b"yz", b"!"), "the request body is longer than its content-length 4"),
        ((b"wx",), "the request body ended after 2 of its 4 declared bytes"),
    ],
    ids=["longer", "shorter"],
)
async def test_http1_streamed_body_must_match_its_declared_length(
    chunks: tuple[bytes, ...], message: str
) -> None:
    """A streamed body longer or shorter than its Content-Length fails instead of desyncing."""
    with upstream(answering(OK)) as (url, _seen):
        async with transport() as client:
            declared = [("content-length", "4")]
            timeouts = {**TIMEOUTS, "read": 1.0}
            body = pieces(*chunks)
            with pytest.raises(httpx.LocalProtocolError, match=message):
                response = await client.send("POST", f"{url}/x", declared, body, timeouts)
                await response.aclose()
            assert pool_of(client)._open == 0


@pytest.mark.parametrize("body", [b"12345", None], ids=["bytes", "none"])
async def test_http1_given_content_length_must_match_a_body_in_hand(body: bytes | None) -> None:
    """A Content-Length header that does not fit the bytes given is refused before sending."""
    with upstream(answering(OK)) as (url, seen):
        async with transport() as client:
            declared = [("content-length", "3")]
            with pytest.raises(httpx.LocalProtocolError, match="content-length' says 3 bytes"):
                await client.send("POST", f"{url}/x", declared, body, TIMEOUTS)
    assert seen.requests == []


async def test_http1_upstream_that_stops_reading_a_body_in_hand_times_out_as_write() -> None:
    """A body in hand larger than the socket buffers, never read: WriteTimeout, not a read one."""

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # Long past the client's write timeout, yet within the 2 s serve_raw grants a
        # handler to finish: a busy machine must not let the close beat the timer.
        await asyncio.sleep(1.8)

    with serve_raw(never_read) as url:
        async with transport() as client:
            timeouts = {**TIMEOUTS, "write": 0.2}
            with pytest.raises(httpx.WriteTimeout, match="timed out sending the request"):
                await client.send("POST", f"{url}/x", [], b"x" * (32 * 1024 * 1024), timeouts)


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"over {scope['scheme']}".encode()})


@contextlib.contextmanager
def tls_upstream(tmp_path: Path) -> Iterator[tuple[str, trustme.CA]]:
    """A uvicorn upstream on https://127.0.0.1 with a certificate from a test CA."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    with serve_app(hello, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as url:
        yield url.replace("http://", "https://"), authority


async def test_http1_https_upstream_is_verified_and_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An https upstream whose certificate the trust store accepts is served over TLS."""
    with tls_upstream(tmp_path) as (url, authority):
        trusting = ssl.create_default_context()
        authority.configure_trust(trusting)
        monkeypatch.setattr(http1, "_default_ssl_context", trusting)
        async with HTTPXFastAPIProxy(url, NO_RETRY) as proxy:
            answer = await proxy.request("GET", "/x")
            assert (answer.status_code, await answer.aread()) == (200, b"over https")
            await answer.aclose()


async def test_http1_https_upstream_with_an_unknown_certificate_is_refused(
    tmp_path: Path,
) -> None:
    """A certificate the system trust store does not know fails the connect: nothing is sent."""
    with tls_upstream(tmp_path) as (url, _authority):
        async with HTTPXFastAPIProxy(url, NO_RETRY) as proxy:
            with pytest.raises(ConnectionFailure) as caught:
                await proxy.request("GET", "/x")
    assert caught.value.kind == "connect-error"
    assert caught.value.reached_upstream is False
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
