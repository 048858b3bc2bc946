"""The same forwarder over aiohttp: ``aiohttp.web`` in front, ``aiohttp.ClientSession`` behind.

It does what ``naive_fastapi_httpx.py`` does (``/{anything}/{id}`` to
``{upstream}/static/{id}``, bodies read whole, hop-by-hop headers dropped), on uvloop, so
the table shows what the other common asyncio stack reaches on the same machine.

    python bench/baselines/aiohttp_forwarder.py --upstream http://127.0.0.1:8080 --port 9001
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict

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
DROPPED_REQUEST = HOP_BY_HOP | {"host", "content-length"}
DROPPED_RESPONSE = HOP_BY_HOP | {"content-length", "content-encoding"}
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.Response:
    target = request.app[UPSTREAM] + "/static/" + request.match_info["tail"].rsplit("/", 1)[-1]
    if request.query_string:
        target += "?" + request.query_string
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROPPED_REQUEST]
    body = await request.read()
    async with request.app[SESSION].request(
        request.method,
        target,
        headers=headers,
        data=body or None,
        allow_redirects=False,
        auto_decompress=False,
    ) as answer:
        payload = await answer.read()
        kept = CIMultiDict(
            (k, v) for k, v in answer.headers.items() if k.lower() not in DROPPED_RESPONSE
        )
        return web.Response(body=payload, status=answer.status, headers=kept)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    # A forwarder must not keep upstream cookies and replay them for other clients.
    connector = aiohttp.TCPConnector(limit=100)
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session:
        app[SESSION] = session
        yield


def build_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="A forwarder over aiohttp web and ClientSession.")
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        build_app(args.upstream),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
