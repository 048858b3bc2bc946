"""Forwarding: one inbound request becomes one upstream request, and its answer comes back.

What passes through is left alone (status, body bytes, content-encoding, every
Set-Cookie); what bizproxy changes it changes on purpose: hop-by-hop headers go,
X-Forwarded-* and X-Request-ID are set, templated parts are rendered and encoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, cast
from urllib.parse import parse_qsl, quote

import jinja2

from bizproxy.admission import admit_body
from bizproxy.errors import BusinessProxyException
from bizproxy.inbound import (
    CLIENT_CLOSED,
    HOP_BY_HOP,
    REQUEST_ID_HEADER,
    BadRequest,
    ClientDisconnected,
    InboundRequest,
    Receive,
    Send,
    connection_named,
    is_hop_by_hop,
    is_trusted,
    read_or_stream_body,
    throttle_client_key,
)
from bizproxy.proxy import IDEMPOTENCY_HEADER, UpstreamResponse
from bizproxy.table import RETRY_BODY_LIMIT, CompiledRoute, ForwardTarget, RouteTable
from bizproxy.templates import Renderable, RestOfPath, UnsafePathValue

logger = logging.getLogger("bizproxy.forward")

IDEMPOTENCY_KEY_HEADER = IDEMPOTENCY_HEADER.lower()


def path_context(route: CompiledRoute, params: dict[str, str]) -> dict[str, str]:
    """Path parameters for templates. A value that is, or holds, a '.' or '..' segment is
    refused: printed into an upstream path it could climb out of the route's prefix at
    any upstream that normalises paths."""
    context: dict[str, str] = {}
    for name, value in params.items():
        rest_of_path = route.path_parameters.get(name, False)
        segments = value.split("/") if rest_of_path else [value]
        if any(segment in (".", "..") for segment in segments):
            raise BadRequest(
                400, "BadPath", f"path parameter {name!r} may not contain '.' or '..' segments"
            )
        context[name] = RestOfPath(value) if rest_of_path else value
    return context


class QueryValues(Mapping[str, str]):
    """The query string's values by name (the last wins), parsed only when a template
    reads one: most templates print path values alone."""

    def __init__(self, query_string: str) -> None:
        self._query_string = query_string
        self._values: dict[str, str] | None = None

    def _parsed(self) -> dict[str, str]:
        if self._values is None:
            self._values = dict(parse_qsl(self._query_string, keep_blank_values=True))
        return self._values

    def __getitem__(self, name: str) -> str:
        return self._parsed()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parsed())

    def __len__(self) -> int:
        return len(self._parsed())


def template_context(
    route: CompiledRoute,
    request: InboundRequest,
    params: dict[str, str],
    body: Any,
) -> dict[str, Any]:
    return {
        "path": path_context(route, params),
        "query": QueryValues(request.query_string),
        "headers": request.headers,
        "body": body,
        "method": request.method,
        "tag": route.tag,
    }


def render(template: Renderable, context: dict[str, Any], what: str) -> str:
    try:
        return template.render(context)
    except UnsafePathValue as error:
        raise BadRequest(400, "BadPath", f"{what} refused: {error}") from error
    except jinja2.UndefinedError as error:
        raise BadRequest(
            400, "TemplateError", f"{what} needs a value the request lacks: {error.message}"
        ) from error
    except jinja2.TemplateError as error:
        raise BadRequest(400, "TemplateError", f"{what} could not be rendered: {error}") from error


async def stream_answer(response: UpstreamResponse, send: Send) -> None:
    """Each chunk goes on as it arrives. With a Content-Length, the chunk that completes
    it also closes the answer: no extra empty message."""
    remaining = response.content_length
    while chunk := await response.read_chunk():
        if remaining is not None:
            remaining -= len(chunk)
            if remaining <= 0:
                await send({"type": "http.response.body", "body": chunk})
                return
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def render_json_body(template: Renderable, context: dict[str, Any]) -> bytes:
    """The rendered JSON body; refused with 400 when the request's values do not fit it."""
    try:
        text = render(template, context, "the upstream body")
    except (TypeError, ValueError) as error:
        raise BadRequest(
            400, "TemplateError", f"the upstream body could not be rendered: {error}"
        ) from error
    try:
        json.loads(text)
    except ValueError as error:
        raise BadRequest(
            400,
            "TemplateError",
            f"the upstream body template rendered invalid JSON for this request: {error}",
        ) from error
    return text.encode()


def upstream_headers(
    request: InboundRequest, table: RouteTable, rendered: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Inbound headers minus hop-by-hop and Host, plus X-Forwarded-* and X-Request-ID."""
    named = connection_named(request.header_pairs)
    replaced = {name.lower() for name, _ in rendered}
    skip = {
        "host",
        "content-length",
        # request() sets it again from the idempotency key, once.
        IDEMPOTENCY_KEY_HEADER,
        REQUEST_ID_HEADER,
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        *replaced,
    }
    headers = [
        (name, value)
        for name, value in request.header_pairs
        if name not in skip and not is_hop_by_hop(name, named)
    ]
    trusted = is_trusted(request.peer, table.server.trusted_proxies)
    peer = request.peer or ""
    forwarded_for = request.headers.get("x-forwarded-for")
    headers.append(
        ("x-forwarded-for", f"{forwarded_for}, {peer}" if trusted and forwarded_for else peer)
    )
    scheme = request.scope.get("scheme", "http")
    proto = request.headers.get("x-forwarded-proto") if trusted else None
    headers.append(("x-forwarded-proto", proto or scheme))
    forwarded_host = request.headers.get("x-forwarded-host") if trusted else None
    host = forwarded_host or request.headers.get("host")
    if host:
        headers.append(("x-forwarded-host", host))
    headers.append((REQUEST_ID_HEADER, request.request_id))
    headers.extend(rendered)
    return headers


# Everything below a space but the tab, and DEL: never valid in a header value.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def rendered_headers(
    target: ForwardTarget, context: dict[str, Any] | None
) -> list[tuple[str, str]]:
    if not target.header_templates or context is None:
        return []
    rendered = []
    for name, template in target.header_templates:
        value = render(template, context, f"header {name!r}")
        if _CONTROL_CHARACTERS.search(value):
            raise BadRequest(
                400,
                "BadHeader",
                f"header {name!r} would contain a line break or another control character; refused",
            )
        rendered.append((name, value))
    return rendered


def split_idempotency_key(
    request: InboundRequest, rendered: list[tuple[str, str]]
) -> tuple[list[tuple[str, str]], str | None]:
    """Take the idempotency key out of the headers: a rendered one, else the client's.

    `request()` sends it as one Idempotency-Key header, and with it may repeat a
    non-idempotent request whose retry policy opts in.
    """
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if not any(name.lower() == IDEMPOTENCY_KEY_HEADER for name, _ in rendered):
        return rendered, key or None
    for name, value in rendered:
        if name.lower() == IDEMPOTENCY_KEY_HEADER:
            key = value
    kept = [(name, value) for name, value in rendered if name.lower() != IDEMPOTENCY_KEY_HEADER]
    return kept, key or None


def upstream_path(
    target: ForwardTarget, request: InboundRequest, context: dict[str, Any] | None
) -> str:
    if target.path_template is None or context is None:
        return request.raw_path
    path = render(target.path_template, context, "the upstream path")
    return path if path.startswith("/") else f"/{path}"


def upstream_query(
    target: ForwardTarget, request: InboundRequest, context: dict[str, Any] | None
) -> str:
    query = request.query_string
    if not target.query_templates or context is None:
        return query
    added = "&".join(
        f"{quote(name, safe='')}={quote(render(template, context, f'query {name!r}'), safe='')}"
        for name, template in target.query_templates
    )
    return f"{query}&{added}" if query else added


_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP) | {b"x-request-id"}
# A 304's Content-Length may name the length of the representation it stands for; the
# server under bizproxy would wait for that many body bytes and drop the connection.
_BODYLESS_DROPPED = _HOP_BY_HOP_BYTES | {b"content-length"}


def response_headers(response: UpstreamResponse, request_id: str) -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones (and its X-Request-ID: ours goes back;
    a 204 or 304 goes without Content-Length, as it has no body)."""
    headers = []
    named: set[bytes] | None = None
    dropped = _BODYLESS_DROPPED if response.status_code in (204, 304) else _HOP_BY_HOP_BYTES
    for key, value in response.raw_headers:
        name = key.lower()
        if name in dropped or name.startswith(b"proxy-"):
            if name == b"connection":
                tokens = {token.strip().lower() for token in value.split(b",")}
                named = tokens if named is None else named | tokens
            continue
        headers.append((name, value))
    if named:
        headers = [(name, value) for name, value in headers if name not in named]
    headers.append((b"x-request-id", request_id.encode("latin-1")))
    return headers


# Most answers come back sooner than this; only a request still open after it pays for
# a task listening for the client leaving (a task for every request cost about 4% of
# forwarded GETs per second here). The upstream call of a client that leaves sooner
# runs to its end, and the answer is dropped.
WATCH_AFTER_SECONDS = 0.05


class DisconnectWatch:
    """Cancels the request's task when the client goes away, so the upstream call stops too.

    It listens only once the request body has been read (before that, reading the body
    notices a departed client itself): from `WATCH_AFTER_SECONDS` after `start`, which is
    at once for a held body, or when a streamed body ends (see `after`).
    """

    def __init__(self, receive: Receive) -> None:
        self.disconnected = False
        self.body_error: BadRequest | ClientDisconnected | None = None
        self._receive = receive
        self._owner = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._timer is None and self._task is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(WATCH_AFTER_SECONDS, self._listen)

    def _listen(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(self._watch())

    async def after(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The streamed body, passed on; the watch starts when its last chunk has gone.

        Reading the body may fail for a reason of the client's (too large, gone). The
        transport reports that as a failed send; `body_error` keeps the real reason.
        """
        try:
            async for chunk in body:
                yield chunk
        except (BadRequest, ClientDisconnected) as error:
            self.body_error = error
            raise
        self.start()

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if self._owner is not None:
                    self._owner.cancel()
                return

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def forward(
    table: RouteTable,
    route: CompiledRoute,
    target: ForwardTarget,
    request: InboundRequest,
    params: dict[str, str],
    receive: Receive,
    send: Send,
) -> int:
    """Serve one request on a forward route; return the status answered."""
    proxy = table.proxies[target.upstream]
    # Read: the whole body when something must look at it, else hold-or-stream.
    limit = table.server.max_body_bytes
    declared = request.check_declared_length(limit)
    body_json: Any = None
    content: bytes | AsyncIterator[bytes] | None
    if route.needs_body:
        admitted = await admit_body(route, request, receive, limit, require_json=False)
        content, body_json = admitted.raw, admitted.parsed
    elif request.has_body():
        content = await read_or_stream_body(receive, limit=limit, hold_limit=RETRY_BODY_LIMIT)
    else:
        content = None

    # Shape: templates render against the request.
    needs_context = target.path_template or target.header_templates or target.query_templates
    context = (
        template_context(route, request, params, body_json)
        if needs_context or target.body_template
        else None
    )
    if target.body_template is not None and context is not None:
        content = render_json_body(target.body_template, context)
    rendered, idempotency_key = split_idempotency_key(request, rendered_headers(target, context))
    headers = upstream_headers(request, table, rendered)
    # Bytes in hand or nothing, else a stream (checked so, not against the ABC: cheaper).
    streamed = content is not None and not isinstance(content, bytes)
    if streamed and declared is not None:
        headers.append(("content-length", str(declared)))

    # Send, then stream the answer back while watching for the client leaving.
    watch = DisconnectWatch(receive)
    if streamed:
        content = watch.after(cast(AsyncIterator[bytes], content))
    else:
        watch.start()
    try:
        try:
            response = await proxy.request(
                request.method,
                upstream_path(target, request, context),
                query=upstream_query(target, request, context),
                headers=headers,
                content=content,
                tag=route.tag,
                client_key=throttle_client_key(
                    request, route.throttle_per, table.server.trusted_proxies
                ),
                timeout_seconds=target.timeout_seconds,
                retry_policy=target.retry_policy,
                idempotency_key=idempotency_key,
            )
        except BusinessProxyException:
            if watch.body_error is not None:
                raise watch.body_error from None
            raise
        async with response:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response_headers(response, request.request_id),
                }
            )
            try:
                await stream_answer(response, send)
            except BusinessProxyException as error:
                # Too late for an error answer: the status went out. Ending without the
                # rest tells the client the body is incomplete (the connection closes).
                logger.warning(
                    "upstream %r broke off its answer to %s %s: %s",
                    target.upstream,
                    request.method,
                    route.path,
                    error,
                )
        return response.status_code
    except asyncio.CancelledError:
        if not watch.disconnected:
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        logger.debug("client disconnected; upstream request for %s cancelled", route.path)
        return CLIENT_CLOSED
    finally:
        await watch.stop()
