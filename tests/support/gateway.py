"""Run a real bizproxy gateway from a routes.yaml text, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn

from bizproxy.gateway import Gateway
from bizproxy.runtime import load_gateway
from tests.support.servers import serve_app


@contextlib.asynccontextmanager
async def gateway_in_this_loop(
    config_text: str, folder: Path, **environ: str
) -> AsyncIterator[tuple[str, Gateway]]:
    """Like `running_gateway`, but uvicorn runs in the test's own event loop, so that the
    test can use the gateway's proxies (send, receive) as business code would."""
    path = folder / "routes.yaml"
    path.write_text(config_text)
    gateway = load_gateway(path, environ={**os.environ, **environ})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(gateway, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", gateway
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.contextmanager
def running_gateway(
    config_text: str, folder: Path, **environ: str
) -> Iterator[tuple[str, Gateway]]:
    """Write routes.yaml into `folder`, build the gateway, serve it; yield (URL, gateway)."""
    path = folder / "routes.yaml"
    path.write_text(config_text)
    gateway = load_gateway(path, environ={**os.environ, **environ})
    with serve_app(gateway, lifespan="on", proxy_headers=False) as url:
        yield url, gateway
