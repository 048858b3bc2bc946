"""A small upstream for the tests, dispatching on path like httpx's own test server.

/status/N[?retry_after=S]   answer status N (with Retry-After when asked)
/slow?seconds=S             wait S seconds, then answer 200
/echo/...                   answer what was received: method, path, query, headers, body
/send                       record the message and its idempotency key, answer 200
/flaky/KEY?fail=N&status=S  answer S to the first N requests for KEY, then 200
/sse?events=N&gap=S         stream N server-sent events, S seconds apart
/cookies                    answer with two Set-Cookie headers
/redirect                   answer 302 with a Location
/gzip                       answer a gzip-encoded body, labelled as such
/bytes?n=N                  stream N bytes in 64 KiB chunks
/healthz                    answer `health_status` (200 unless a test changes it)
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    at: float = field(default_factory=time.monotonic)
    """When the request arrived, on the monotonic clock."""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


@dataclass
class UpstreamApp:
    """An ASGI app that records every request it receives."""

    requests: list[ReceivedRequest] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    send_status: int = 200
    health_status: int = 200

    def received(self, path_prefix: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        request = ReceivedRequest(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=body,
        )
        self.requests.append(request)
        await self._dispatch(request, send)

    async def _dispatch(self, request: ReceivedRequest, send: Any) -> None:
        path = request.path
        query = {k: v[-1] for k, v in parse_qs(request.query).items()}
        if path.startswith("/status/"):
            status = int(path.split("/")[2])
            headers = [("retry-after", query["retry_after"])] if "retry_after" in query else []
            await respond_json(send, status, {"status": status}, headers)
        elif path == "/slow":
            await asyncio.sleep(float(query.get("seconds", "1")))
            await respond_json(send, 200, {"slept": float(query.get("seconds", "1"))})
        elif path.startswith("/echo"):
            await respond_json(send, 200, describe(request))
        elif path == "/send":
            status = self.send_status
            message = json.loads(request.body) if request.body else None
            await respond_json(send, status, {"ok": status < 400, "received": message})
        elif path.startswith("/flaky/"):
            key = path.split("/")[2]
            self.counts[key] += 1
            if self.counts[key] <= int(query.get("fail", "1")):
                status = int(query.get("status", "503"))
                headers = [("retry-after", query["retry_after"])] if "retry_after" in query else []
                await respond_json(send, status, {"attempt": self.counts[key]}, headers)
            else:
                await respond_json(send, 200, {"attempt": self.counts[key]})
        elif path == "/sse":
            await sse(send, int(query.get("events", "3")), float(query.get("gap", "0.2")))
        elif path == "/cookies":
            headers = [("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2; Path=/")]
            await respond_json(send, 200, {"cookies": 2}, headers)
        elif path == "/redirect":
            await respond_json(send, 302, {}, [("location", "/echo/target")])
        elif path == "/gzip":
            payload = gzip.compress(b"compressed hello " * 100)
            await respond(send, 200, payload, [("content-encoding", "gzip")], "text/plain")
        elif path == "/hop":
            headers = [
                ("connection", "x-hop-out"),
                ("x-hop-out", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authenticate", "Basic"),
                ("x-kept", "yes"),
            ]
            await respond_json(send, 200, {"hop": True}, headers)
        elif path == "/healthz":
            await respond_json(send, self.health_status, {"status": self.health_status})
        elif path == "/bytes":
            await stream_bytes(send, int(query.get("n", "1024")))
        else:
            await respond_json(send, 404, {"error": "no such path", "path": path})


def describe(request: ReceivedRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": request.headers,
        "body": request.body.decode("utf-8", "replace"),
    }


async def respond(
    send: Any, status: int, body: bytes, headers: list[tuple[str, str]], content_type: str
) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers]
    raw += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Any, status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> None:
    await respond(send, status, json.dumps(payload).encode(), headers or [], "application/json")


async def sse(send: Any, events: int, gap_seconds: float) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for number in range(events):
        chunk = f"data: event {number}\n\n".encode()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(gap_seconds)
    await send({"type": "http.response.body", "body": b""})


async def stream_bytes(send: Any, total: int) -> None:
    headers = [(b"content-type", b"application/octet-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunk = b"x" * 65536
    sent = 0
    while sent < total:
        piece = chunk[: min(len(chunk), total - sent)]
        sent += len(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": sent < total})
    if total == 0:
        await send({"type": "http.response.body", "body": b""})
