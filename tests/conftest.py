from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import serve_app
from tests.support.upstream_app import UpstreamApp


@pytest.fixture
def upstream_app() -> UpstreamApp:
    return UpstreamApp()


@pytest.fixture
def upstream_url(upstream_app: UpstreamApp) -> Iterator[str]:
    """A fresh recording upstream served by uvicorn on 127.0.0.1."""
    with serve_app(upstream_app) as url:
        yield url
