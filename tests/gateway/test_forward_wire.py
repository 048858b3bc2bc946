"""Forwarding as it looks on the wire: a raw upstream answers byte for byte what the test
says, through a real gateway served by uvicorn, to a client on a plain socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import running_gateway
from tests.support.servers import serve_raw

CONFIG = """
version: 1
upstreams:
  raw:
    url: {upstream}
    timeout: 2s
    pool: {{max_connections: 1}}
routes:
  - path: /{{rest:path}}
    methods: [GET]
    forward: {{upstream: raw}}
"""

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answering(answer: bytes) -> Handler:
    """A keep-alive upstream that gives every bodiless request the same raw answer."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(answer)
            await writer.drain()

    return handler


def read_head(sock: socket.socket) -> bytes:
    """One answer's head from the socket; b"" if the gateway closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return b""
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 204 No Content"])
def test_forward_bodyless_answer_with_a_length_keeps_the_client_connection(
    tmp_path: Path, status_line: bytes
) -> None:
    """A 304 that names its representation's Content-Length (as RFC 9110 allows), or a
    204 that names one, reaches the client, whose keep-alive connection carries on."""
    answer = status_line + b'\r\netag: "v1"\r\ncontent-length: 20\r\n\r\n'
    with serve_raw(answering(answer)) as upstream:
        with running_gateway(CONFIG.format(upstream=upstream), tmp_path) as (url, _):
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port)), timeout=3) as sock:
                heads = []
                for _ in range(2):
                    sock.sendall(b'GET /page HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\n')
                    heads.append(read_head(sock))
    assert [head.split(b"\r\n", 1)[0] for head in heads] == [status_line] * 2
    assert b'etag: "v1"' in heads[0]


def test_forward_drops_trailer_fields_instead_of_promoting_them_to_headers(
    tmp_path: Path,
) -> None:
    """Trailer fields of a chunked answer never become headers of the client's answer,
    even when they arrive in the same packet as the head."""
    answer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: set-cookie\r\n\r\n"
        b"b\r\nhello world\r\n0\r\nset-cookie: session=upstream-trailer\r\n\r\n"
    )
    with serve_raw(answering(answer)) as upstream:
        with running_gateway(CONFIG.format(upstream=upstream), tmp_path) as (url, _):
            response = httpx.get(f"{url}/page", timeout=3)
    assert response.status_code == 200
    assert response.content == b"hello world"
    assert "set-cookie" not in response.headers
