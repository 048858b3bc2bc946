"""The built-in static upstream: uvloop and httptools, one fixed answer, keep-alive.

Used when nginx is not installed. Request bodies (sized or chunked) are parsed and dropped.
Run as ``python -m bench.builtin_upstream --port N``; it serves until it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import httptools
import uvloop

from bench.upstream import static_body


def _response(keep_alive: bool) -> bytes:
    body = static_body()
    connection = b"keep-alive" if keep_alive else b"close"
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: %s\r\n\r\n" % (len(body), connection)
    )
    return head + body


KEEP_ALIVE = _response(True)
CLOSE = _response(False)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class StaticProtocol(asyncio.Protocol):
    """Answers every complete request with the static body."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        # Set before any data arrives; uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.parser.should_keep_alive():
            self.transport.write(KEEP_ALIVE)
            return
        self.transport.write(CLOSE)
        self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StaticProtocol, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A static HTTP upstream on 127.0.0.1.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
