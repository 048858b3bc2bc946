"""Run a real bizproxy gateway from a routes.yaml text, served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from bizproxy.gateway import Gateway
from bizproxy.runtime import load_gateway
from tests.support.servers import serve_app


@contextlib.contextmanager
def running_gateway(
    config_text: str, folder: Path, **environ: str
) -> Iterator[tuple[str, Gateway]]:
    """Write routes.yaml into `folder`, build the gateway, serve it; yield (URL, gateway)."""
    path = folder / "routes.yaml"
    path.write_text(config_text)
    gateway = load_gateway(path, environ={**os.environ, **environ})
    with serve_app(gateway, lifespan="on") as url:
        yield url, gateway
