"""Run real servers on 127.0.0.1 with ephemeral ports, each in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn


def _bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@contextlib.contextmanager
def serve_app(
    app: Any, *, interface: str = "auto", lifespan: str = "off", port: int = 0, **config: Any
) -> Iterator[str]:
    """Serve an ASGI (or WSGI, with interface='wsgi') app; yield its base URL.

    `port` 0 picks a free one; a given port serves again where a stopped server was.
    """
    sock = _bound_socket(port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", interface=interface, lifespan=lifespan, **config)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start within 10s")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.contextmanager
def serve_raw(handler: Handler) -> Iterator[str]:
    """Serve a raw asyncio TCP handler, for peers that misbehave below HTTP; yield its URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}
    handlers: set[asyncio.Task[Any]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        finally:
            writer.close()
            handlers.discard(task)

    async def stop() -> None:
        # Handlers still running get a moment to see the client's close before the
        # loop stops; those that outlast it are cancelled and awaited, so that none is
        # destroyed pending with its connection open.
        if handlers:
            await asyncio.wait(set(handlers), timeout=2)
        left = set(handlers)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=2)
        # The closed transports let go of their sockets on the loop's next turns.
        for _ in range(3):
            await asyncio.sleep(0)
        holder["task"].cancel()

    async def main() -> None:
        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        holder["server"] = server
        holder["port"] = server.sockets[0].getsockname()[1]
        started.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        task = loop.create_task(main())
        holder["task"] = task
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("raw test server did not start within 10s")
    try:
        yield f"http://127.0.0.1:{holder['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop)
        thread.join(timeout=10)


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    """Read up to the blank line that ends an HTTP request head."""
    return await reader.readuntil(b"\r\n\r\n")


async def close_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read a request, then close the connection without answering."""
    with contextlib.suppress(Exception):
        await read_request_head(reader)
    writer.close()


async def reset_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read a request, then reset the connection (RST, not FIN)."""
    import struct

    with contextlib.suppress(Exception):
        await read_request_head(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def hang_after_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read a request and never answer, until the client gives up."""
    with contextlib.suppress(Exception):
        await read_request_head(reader)
        await reader.read()
    writer.close()


def unused_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was bound, then released)."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"
