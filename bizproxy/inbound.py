"""One inbound request at the ASGI level: its headers, its body within limits, and answers
that bizproxy itself decides (JSON error bodies with the status of the error model).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from bizproxy.errors import (
    BusinessProxyException,
    ConnectionFailure,
    NotConnected,
    RetriesExhausted,
    SignatureFailure,
    Throttled,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from bizproxy.metrics import THROTTLED
from bizproxy.policies.throttle import Budget

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("bizproxy.inbound")

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_SCOPE_KEY = "bizproxy.request_id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,200}")
"""Where the request's id is left in the ASGI scope, for the access log."""

# Dropped in both directions, with every header that Connection names.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


class BadRequest(Exception):
    """The inbound request itself is at fault; answered with `status` and a clear message."""

    def __init__(self, status: int, error_type: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.details = details


CLIENT_CLOSED = 499
"""The status recorded (never sent) when the client left before its answer."""


class ClientDisconnected(Exception):
    """The client went away before its request was complete."""


def body_too_large(limit: int) -> BadRequest:
    return BadRequest(
        413, "BodyTooLarge", f"request body is larger than the limit of {limit} bytes"
    )


class InboundRequest:
    """The parts of an ASGI request that routing, templates and forwarding read."""

    __slots__ = ("header_pairs", "headers", "method", "raw_path", "request_id", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        raw_path = scope.get("raw_path")
        self.raw_path: str = raw_path.decode("latin-1") if raw_path else scope["path"]
        # ASGI servers give header names in lower case already.
        self.header_pairs: list[tuple[str, str]] = [
            (key.decode("latin-1").lower(), value.decode("latin-1"))
            for key, value in scope["headers"]
        ]
        headers: dict[str, str] = {}
        for name, text in self.header_pairs:
            headers[name] = f"{headers[name]}, {text}" if name in headers else text
        self.headers = headers
        given = headers.get(REQUEST_ID_HEADER)
        # A client's id is passed on only when it is a plain token; otherwise a new one.
        if given is not None and _REQUEST_ID.fullmatch(given):
            self.request_id = given
        else:
            self.request_id = os.urandom(16).hex()
        scope[REQUEST_ID_SCOPE_KEY] = self.request_id

    @property
    def query_string(self) -> str:
        raw: bytes = self.scope.get("query_string", b"")
        return raw.decode("latin-1")

    @property
    def peer(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    def declared_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise BadRequest(400, "BadRequest", f"Content-Length {value!r} is not a number")
        return int(value)

    def check_declared_length(self, limit: int) -> int | None:
        """The Content-Length, refused with 413 before reading when it is over `limit`."""
        declared = self.declared_length()
        if declared is not None and declared > limit:
            raise body_too_large(limit)
        return declared

    def has_body(self) -> bool:
        return "content-length" in self.headers or "transfer-encoding" in self.headers


def connection_named(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names listed in Connection, which are hop-by-hop for this one connection."""
    named: set[str] = set()
    for key, value in headers:
        if key.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def is_hop_by_hop(name: str, named: set[str]) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered.startswith("proxy-") or lowered in named


async def _chunks(receive: Receive, limit: int, size: int = 0) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive, refused with 413 once past `limit` bytes."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        more = message.get("more_body", False)
        if chunk or not more:
            yield chunk
        if not more:
            return


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it passes `limit` bytes."""
    return b"".join([chunk async for chunk in _chunks(receive, limit)])


async def read_or_stream_body(
    receive: Receive, *, limit: int, hold_limit: int
) -> bytes | AsyncIterator[bytes]:
    """The body as bytes when it fits in `hold_limit` (so it can be retried), else a stream.

    Either way no more than `limit` bytes are accepted: the stream raises 413 the moment
    the client sends one byte too many.
    """
    chunks = _chunks(receive, limit)
    held: list[bytes] = []
    size = 0
    async for chunk in chunks:
        held.append(chunk)
        size += len(chunk)
        if size > hold_limit:
            return _held_then_rest(held, chunks)
    return b"".join(held)


async def _held_then_rest(held: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # A large body is streamed (and so sent once), even when it arrived in one piece.
    for chunk in held:
        yield chunk
    held.clear()
    async for chunk in rest:
        if chunk:
            yield chunk


def parse_networks(
    entries: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def is_trusted(address: str | None, networks: tuple[Any, ...]) -> bool:
    if address is None or not networks:
        return False
    return _is_trusted(address, networks)


@functools.lru_cache(maxsize=4096)
def _is_trusted(address: str, networks: tuple[Any, ...]) -> bool:
    # Peers repeat, and parsing an address costs more than the rest of the check.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: InboundRequest, trusted: tuple[Any, ...]) -> str | None:
    """The client's address: the peer, or the nearest untrusted hop of X-Forwarded-For."""
    peer = request.peer
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded or not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def throttle_client_key(
    request: InboundRequest, per: str | None, trusted: tuple[Any, ...]
) -> str | None:
    """Who the request counts against in a per-client budget; None for the tag's one bucket.

    `per: client` is the client's address (X-Forwarded-For believed from trusted proxies);
    `per: header:NAME` is that header's value, and requests without it share one bucket.
    """
    if per is None:
        return None
    if per == "client":
        return client_address(request, trusted)
    return request.headers.get(per.removeprefix("header:").lower())


def throttle_headers(budgets: Mapping[str, Budget], error: Throttled) -> list[tuple[bytes, bytes]]:
    """The IETF RateLimit-Policy and RateLimit fields for a refused request."""
    budget = budgets.get(error.tag or "")
    if budget is None:
        return []
    # Rounded up like Retry-After, which must not point before the end of this window.
    reset = max(1, math.ceil(error.retry_after or 1))
    return [
        (b"ratelimit-policy", budget.policy_header.encode()),
        (b"ratelimit", f'"{budget.tag}";r=0;t={reset}'.encode()),
    ]


async def answer_failures(
    work: Awaitable[int],
    send: Send,
    *,
    request_id: str,
    route: str,
    upstream: str,
    budgets: Mapping[str, Budget],
) -> int:
    """Run a route's work; answer what goes wrong with the error model's status and body."""
    try:
        return await work
    except BadRequest as error:
        return await send_error(
            send,
            error.status,
            error.error_type,
            error.message,
            request_id=request_id,
            route=route,
            upstream=upstream,
            details=error.details,
        )
    except Throttled as error:
        headers = throttle_headers(budgets, error)
        return await answer_exception(
            send, error, request_id=request_id, route=route, headers=headers
        )
    except BusinessProxyException as error:
        return await answer_exception(send, error, request_id=request_id, route=route)
    except ClientDisconnected:
        logger.debug("client went away during a request on %s", route)
        return CLIENT_CLOSED


def retry_after_header(seconds: float | None) -> list[tuple[bytes, bytes]]:
    if seconds is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(seconds))).encode())]


async def send_error(
    send: Send,
    status: int,
    error_type: str,
    message: str,
    *,
    request_id: str,
    route: str | None = None,
    upstream: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Answer with bizproxy's own JSON error body; return the status."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if route is not None:
        error["route"] = route
    if upstream is not None:
        error["upstream"] = upstream
    error["request_id"] = request_id
    if details:
        error.update(details)
    await send_json(send, status, {"error": error}, headers=headers, request_id=request_id)
    return status


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    *,
    request_id: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def status_for(error: BusinessProxyException) -> int:
    """The HTTP status of the error model for an exception bizproxy raised."""
    if isinstance(error, RetriesExhausted):
        cause = error.last_cause
        return 504 if isinstance(cause, UpstreamTimeout) else 502
    for cls, status in _STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 502


_STATUS_BY_ERROR: tuple[tuple[type[BusinessProxyException], int], ...] = (
    (Throttled, 429),
    (Unavailable, 503),
    (NotConnected, 503),
    (UpstreamTimeout, 504),
    (ConnectionFailure, 502),
    (SignatureFailure, 401),
    (UpstreamError, 502),
)


async def answer_exception(
    send: Send,
    error: BusinessProxyException,
    *,
    request_id: str,
    route: str | None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """Answer an exception with its status, its retry hint, and bizproxy's JSON body."""
    extra = list(headers or [])
    retry_after = getattr(error, "retry_after", None)
    if isinstance(error, Throttled | Unavailable):
        extra += retry_after_header(retry_after if retry_after is not None else 1.0)
    details: dict[str, Any] = {}
    if isinstance(error, RetriesExhausted):
        details["attempts"] = error.attempts
    if isinstance(error, Throttled) and error.tag is not None:
        details["tag"] = error.tag
    if isinstance(error, Throttled):
        THROTTLED.labels(tag=error.tag or "").inc()
    return await send_error(
        send,
        status_for(error),
        type(error).__name__,
        str(error),
        request_id=request_id,
        route=route,
        upstream=error.upstream,
        headers=extra,
        details=details,
    )
