"""A naive forwarder: one FastAPI catch-all route calling a shared ``httpx.AsyncClient``.

The reference point of the proxy table: what a short hand-written forwarder reaches on the
stack bizproxy uses (uvicorn, FastAPI, httpx). ``/{anything}/{id}`` is forwarded to
``{upstream}/static/{id}``, with the query string; the request body is read whole and the
answer is returned whole. Hop-by-hop headers are dropped both ways. With
``--transport aiohttp`` the client runs on ``httpx_aiohttp.AiohttpTransport`` instead of
httpx's default transport, and nothing else changes.

    python bench/baselines/naive_fastapi_httpx.py --upstream http://127.0.0.1:8080 --port 9000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed by whoever writes the body next.
DROPPED_REQUEST = HOP_BY_HOP | {"host", "content-length"}
DROPPED_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
POOL = httpx.Limits(max_connections=100, max_keepalive_connections=100)


def make_transport(kind: str) -> httpx.AsyncBaseTransport:
    if kind == "default":
        return httpx.AsyncHTTPTransport(limits=POOL)
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        # A forwarder must not keep upstream cookies and replay them for other clients.
        connector = aiohttp.TCPConnector(limit=POOL.max_connections or 0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    return AiohttpTransport(limits=POOL, client=session)


def build_app(upstream: str, transport: str = "default") -> FastAPI:
    clients: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = httpx.AsyncClient(
            base_url=upstream, transport=make_transport(transport), timeout=10.0
        )
        async with client:
            clients.append(client)
            yield

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.api_route("/{path:path}", methods=METHODS)
    async def forward(path: str, request: Request) -> Response:
        target = "/static/" + path.rsplit("/", 1)[-1]
        if request.url.query:
            target += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.items() if k not in DROPPED_REQUEST]
        answer = await clients[0].request(
            request.method, target, headers=headers, content=await request.body()
        )
        kept = [(k, v) for k, v in answer.headers.multi_items() if k not in DROPPED_RESPONSE]
        response = Response(answer.content, status_code=answer.status_code)
        for name, value in kept:
            response.headers.append(name, value)
        return response

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="A naive FastAPI + httpx forwarder.")
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=["default", "aiohttp"], default="default")
    args = parser.parse_args()
    app = build_app(args.upstream, args.transport)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
