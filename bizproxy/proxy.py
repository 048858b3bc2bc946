"""HTTPXFastAPIProxy: one upstream, its connection pool, and the retry and throttle loop.

This, `forward` and the transport (`http1`) are the only modules that touch httpx. Every
httpx exception is translated into a bizproxy exception in `translate_httpx_error`, and
nowhere else.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as jsonlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from bizproxy.errors import (
    BusinessProxyException,
    ConnectionFailure,
    NotConnected,
    RetriesExhausted,
    SignatureFailure,
    UpstreamError,
    UpstreamTimeout,
)
from bizproxy.health import HealthCheck, HealthChecker
from bizproxy.http1 import Http1Body, Http1Transport
from bizproxy.inbox import Inbox
from bizproxy.interface import JSON, RetryPluginCallable, ThrottlePluginCallable
from bizproxy.metrics import UpstreamMetrics
from bizproxy.policies.breaker import CircuitBreaker
from bizproxy.policies.retry import (
    RETRY_AFTER_STATUSES,
    AttemptFailure,
    RetryBudget,
    RetryDecider,
    as_retry_policy,
)
from bizproxy.policies.throttle import Throttle, as_throttle
from bizproxy.targets import Target, TargetSet

logger = logging.getLogger("bizproxy.proxy")

IDEMPOTENCY_HEADER = "Idempotency-Key"

Signer = Callable[[str, bytes], Mapping[str, str]]
"""Outbound signing: given a message id and the body, the headers to add."""

RequestBody = bytes | str | AsyncIterable[bytes] | None


@dataclass(frozen=True)
class Timeouts:
    """Per-phase timeouts for one upstream, in seconds."""

    connect_seconds: float = 5.0
    read_seconds: float = 30.0
    write_seconds: float = 30.0
    pool_seconds: float = 5.0

    def capped(self, seconds: float | None) -> httpx.Timeout:
        """Every phase at most `seconds` (when given), so no single wait outlives a deadline."""

        def cap(value: float) -> float:
            return value if seconds is None else max(0.001, min(value, seconds))

        return httpx.Timeout(
            connect=cap(self.connect_seconds),
            read=cap(self.read_seconds),
            write=cap(self.write_seconds),
            pool=cap(self.pool_seconds),
        )


@dataclass(frozen=True)
class PoolLimits:
    """Connection pool bounds for one upstream."""

    max_connections: int = 100
    max_keepalive: int | None = None
    """Idle connections kept; None: up to max_connections."""
    keepalive_expiry_seconds: float = 5.0


# Most specific first; `translate_httpx_error` walks an exception's MRO to find its row,
# and a test fails when httpx grows an exception class that has no row of its own.
_NOTHING_SENT = False
_MAYBE_SENT = True
_HTTPX_ERRORS: dict[type[Exception], tuple[str, str, bool]] = {
    httpx.ConnectTimeout: ("timeout", "timed out connecting", _NOTHING_SENT),
    httpx.PoolTimeout: ("timeout", "timed out waiting for a pooled connection", _NOTHING_SENT),
    httpx.ReadTimeout: ("timeout", "timed out waiting for the answer", _MAYBE_SENT),
    httpx.WriteTimeout: ("timeout", "timed out sending the request", _MAYBE_SENT),
    httpx.TimeoutException: ("timeout", "timed out", _MAYBE_SENT),
    httpx.ConnectError: ("connect-error", "could not connect", _NOTHING_SENT),
    httpx.ReadError: ("reset", "connection broke while reading the answer", _MAYBE_SENT),
    httpx.WriteError: ("reset", "connection broke while sending the request", _MAYBE_SENT),
    httpx.CloseError: ("reset", "connection broke while closing", _MAYBE_SENT),
    httpx.NetworkError: ("reset", "network error", _MAYBE_SENT),
    httpx.RemoteProtocolError: ("reset", "upstream broke the HTTP protocol", _MAYBE_SENT),
    httpx.LocalProtocolError: ("protocol", "could not form a valid request", _NOTHING_SENT),
    httpx.ProtocolError: ("protocol", "HTTP protocol error", _MAYBE_SENT),
    httpx.ProxyError: ("connect-error", "outbound HTTP proxy failed", _NOTHING_SENT),
    httpx.UnsupportedProtocol: ("connect-error", "unsupported URL scheme", _NOTHING_SENT),
    httpx.DecodingError: ("protocol", "could not decode the answer", _MAYBE_SENT),
    httpx.TooManyRedirects: ("protocol", "too many redirects", _MAYBE_SENT),
    httpx.TransportError: ("protocol", "transport error", _MAYBE_SENT),
    httpx.RequestError: ("protocol", "request failed", _MAYBE_SENT),
    httpx.HTTPStatusError: ("protocol", "error status", _MAYBE_SENT),
    httpx.HTTPError: ("protocol", "HTTP error", _MAYBE_SENT),
    httpx.InvalidURL: ("protocol", "invalid URL", _NOTHING_SENT),
    httpx.CookieConflict: ("protocol", "conflicting cookies", _NOTHING_SENT),
    httpx.StreamConsumed: ("protocol", "request body already consumed", _NOTHING_SENT),
    httpx.StreamClosed: ("protocol", "stream already closed", _MAYBE_SENT),
    httpx.ResponseNotRead: ("protocol", "response body not read", _MAYBE_SENT),
    httpx.RequestNotRead: ("protocol", "request body not read", _NOTHING_SENT),
    httpx.StreamError: ("protocol", "stream error", _MAYBE_SENT),
}
_TIMEOUT_PHASES: dict[type[Exception], Any] = {
    httpx.ConnectTimeout: "connect",
    httpx.PoolTimeout: "pool",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
}


def translate_httpx_error(
    error: Exception, *, upstream: str | None, action: str
) -> BusinessProxyException:
    """The one place where an httpx exception becomes a bizproxy exception."""
    for cls in type(error).__mro__:
        row = _HTTPX_ERRORS.get(cls)
        if row is None:
            continue
        kind, what, reached = row
        detail = str(error) or type(error).__name__
        message = f"{action} on upstream {upstream!r}: {what} ({detail})"
        if kind == "timeout":
            return UpstreamTimeout(
                message, upstream=upstream, phase=_TIMEOUT_PHASES.get(cls, "read")
            )
        return ConnectionFailure(message, upstream=upstream, kind=kind, reached_upstream=reached)  # type: ignore[arg-type]
    return BusinessProxyException(f"{action} on upstream {upstream!r}: {error}", upstream=upstream)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header in either form (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    wall_now = time.time() if now is None else now
    return max(0.0, moment.timestamp() - wall_now)


def overall_deadline(*limits_seconds: float | None) -> float | None:
    """The monotonic moment the smallest of the given limits runs out, or None for none."""
    given = [limit for limit in limits_seconds if limit is not None]
    return time.monotonic() + min(given) if given else None


def checked_base_url(base_url: str) -> str:
    """The base URL without its trailing slash; ValueError when it cannot be an upstream."""
    parts = urlsplit(base_url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port in (-1, 0):
        raise ValueError(
            f"expected an upstream base URL such as http://127.0.0.1:9001 "
            f"(http or https, a host, a port from 1 to 65535), got {base_url!r}"
        )
    return base_url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Outbound:
    """One request to send, the same for every attempt."""

    method: str
    path: str
    query: str | None
    headers: list[tuple[str, str]]
    content: RequestBody
    deadline: float | None
    has_idempotency_key: bool

    @property
    def action(self) -> str:
        """How messages name the request: method and path, never the query."""
        return f"{self.method} {self.path}"

    @property
    def replayable(self) -> bool:
        """Bytes can be sent again; a streamed body only once."""
        return self.content is None or isinstance(self.content, bytes | str)


class UpstreamResponse:
    """An upstream's answer, still streaming; close it (or use `async with`) when done."""

    def __init__(self, response: httpx.Response, *, upstream: str | None, attempts: int) -> None:
        self._response = response
        stream = response.stream
        self._direct = stream if isinstance(stream, Http1Body) else None
        self._chunks: AsyncIterator[bytes] | None = None
        self.upstream = upstream
        self.attempts = attempts
        self.status_code = response.status_code
        self.raw_headers: list[tuple[bytes, bytes]] = response.headers.raw
        """As the upstream sent them: several Set-Cookie stay several."""

    @property
    def content_length(self) -> int | None:
        for key, value in self.raw_headers:
            if key.lower() == b"content-length":
                return int(value) if value.isdigit() else None
        return None

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw_headers]

    def header(self, name: str) -> str | None:
        value: str | None = self._response.headers.get(name)
        return value

    async def read_chunk(self) -> bytes:
        """The next piece of the body as the upstream sent it (encoding untouched); b""
        at its end."""
        try:
            if self._direct is not None:
                return await self._direct.read_chunk()
            if self._chunks is None:
                self._chunks = self._response.aiter_raw()
            return await anext(self._chunks, b"")
        except httpx.HTTPError as error:
            raise translate_httpx_error(
                error, upstream=self.upstream, action="reading the answer"
            ) from error

    async def aread(self) -> bytes:
        """The whole body, decoded from its content-encoding."""
        try:
            return await self._response.aread()
        except httpx.HTTPError as error:
            raise translate_httpx_error(
                error, upstream=self.upstream, action="reading the answer"
            ) from error

    def json(self) -> JSON:
        return jsonlib.loads(self._response.content)

    async def aclose(self) -> None:
        if self._direct is not None:
            self._direct.release()
        else:
            await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class HTTPXFastAPIProxy:
    """The business proxy for one upstream: one target (`base_url`) or several (`targets`).

    `send` posts JSON messages out under a throttle budget and a bounded retry policy;
    `receive` yields messages the inbound side delivered with `deliver`. Each target has
    its own connection pool; each attempt goes to the target `targets` picks.
    """

    def __init__(
        self,
        base_url: str,
        retry_policy: RetryDecider | RetryPluginCallable | None = None,
        throttler: Throttle | ThrottlePluginCallable | None = None,
        *,
        name: str | None = None,
        timeouts: Timeouts | None = None,
        pool: PoolLimits | None = None,
        headers: Mapping[str, str] | None = None,
        send_method: str = "POST",
        send_path: str = "/send",
        signer: Signer | None = None,
        inbox_max_messages: int = 1000,
        breaker: CircuitBreaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        targets: TargetSet | None = None,
        health: HealthCheck | None = None,
    ) -> None:
        self.base_url = checked_base_url(base_url)
        self.name = name or self.base_url
        self.retry_policy = as_retry_policy(retry_policy)
        self.throttle = as_throttle(throttler)
        self.timeouts = timeouts or Timeouts()
        self.pool = pool or PoolLimits()
        self.headers = dict(headers or {})
        self.send_method = send_method.upper()
        self.send_path = send_path
        self.signer = signer
        self.breaker = breaker
        budget_ratio = self.retry_policy.budget_ratio
        self.retry_budget = RetryBudget(budget_ratio) if budget_ratio is not None else None
        if targets is None:
            only = Target(self.base_url, transport=transport or self._new_transport())
            targets = TargetSet.of(self.name, [(only, 1, breaker)])
        self.targets = targets
        self._health = HealthChecker(health, targets) if health is not None else None
        self._connected = False
        # Built once: a proxy adds no User-Agent, Accept or Connection of its own, only
        # the headers the upstream's config declares.
        self._header_items = list(self.headers.items())
        self._default_timeout = self.timeouts.capped(None).as_dict()
        self._lifecycle = asyncio.Lock()
        self._inbox_max_messages = inbox_max_messages
        self._inbox = Inbox(inbox_max_messages, upstream=self.name)
        self._inbox_handed_on = False
        self.in_flight = 0
        self.metrics = UpstreamMetrics(self.name)

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return f"<HTTPXFastAPIProxy {self.name!r} {self.base_url} {state}>"

    # -- lifecycle -------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def health_checks_running(self) -> bool:
        return self._health is not None and self._health.running

    async def connect(self) -> None:
        async with self._lifecycle:
            if self._connected:
                return
            for target in self.targets.targets:
                target.acquire()
            self._connected = True
            await self._inbox.open()
            if self._health is not None:
                self._health.start()
            logger.debug("upstream %r connected to %s", self.name, self.base_url)

    async def disconnect(self) -> None:
        async with self._lifecycle:
            if not self._connected:
                return
            self._connected = False
            if self._health is not None:
                await self._health.stop()
            # An inbox handed on to the proxy that replaced this one stays open for it.
            unread = 0 if self._inbox_handed_on else await self._inbox.close()
            # A target that a newer proxy adopted keeps its pool open for that proxy.
            for target in self.targets.targets:
                await target.release()
            if unread:
                logger.warning(
                    "upstream %r disconnected with %d delivered messages not yet received; "
                    "receive() still hands them out",
                    self.name,
                    unread,
                )
            logger.debug("upstream %r disconnected", self.name)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    def _new_transport(self) -> Http1Transport:
        return Http1Transport(
            max_connections=self.pool.max_connections,
            max_keepalive=self.pool.max_keepalive,
            keepalive_expiry_seconds=self.pool.keepalive_expiry_seconds,
        )

    def _require_connected(self, action: str) -> None:
        if not self._connected:
            raise NotConnected(
                f"{action} on upstream {self.name!r}: the proxy is not connected; "
                "call connect() or use 'async with'",
                upstream=self.name,
            )

    # -- inbound side ----------------------------------------------------------------

    async def deliver(self, message: JSON) -> str:
        """Hand a message to receive(); return its id. Raises InboxFull when there is no room."""
        return await self._inbox.put(message)

    def receive(self) -> AsyncIterator[JSON]:
        """Yield delivered messages; ends once the proxy disconnects and the inbox is empty."""
        return self._inbox.messages()

    def take_inbox_of(self, previous: HTTPXFastAPIProxy) -> None:
        """Take over the inbox of the proxy this one replaces (a reload changed its
        upstream): what was delivered stays, and its receive() loops carry on."""
        self._inbox = previous._inbox
        self._inbox.max_messages = self._inbox_max_messages
        previous._inbox_handed_on = True

    @property
    def inbox_size(self) -> int:
        return len(self._inbox)

    # -- outbound side ---------------------------------------------------------------

    async def send(self, message: JSON, tag: str | None = None) -> JSON:
        """Post `message` as JSON to the send endpoint; return the upstream's answer."""
        action = f"send {self.send_method} {self.send_path}"
        body = jsonlib.dumps(message, separators=(",", ":")).encode()
        response = await self.request(
            self.send_method,
            self.send_path,
            content=body,
            headers={"content-type": "application/json"},
            tag=tag,
            idempotency_key=uuid.uuid4().hex,
        )
        async with response:
            payload = await response.aread()
        if response.status_code == 401:
            raise SignatureFailure(
                f"{action}: upstream {self.name!r} refused the request's credentials (401)",
                upstream=self.name,
            )
        if response.status_code >= 400:
            raise UpstreamError(
                f"{action}: upstream {self.name!r} answered {response.status_code}",
                upstream=self.name,
                status=response.status_code,
                body=payload,
                retry_after=parse_retry_after(response.header("retry-after")),
            )
        if not payload:
            return None
        try:
            return jsonlib.loads(payload)
        except ValueError:
            return payload.decode("utf-8", "replace")

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: str | None = None,
        headers: Sequence[tuple[str, str]] | Mapping[str, str] | None = None,
        content: RequestBody = None,
        tag: str | None = None,
        client_key: str | None = None,
        timeout_seconds: float | None = None,
        retry_policy: RetryDecider | None = None,
        idempotency_key: str | None = None,
    ) -> UpstreamResponse:
        """Send one request through the throttle and the retry loop; the answer streams.

        `path` must already be percent-encoded, and `query` is the raw, encoded query
        string, passed on byte for byte. A body given as bytes may be retried; a
        streamed body is sent at most once.
        The overall deadline, every attempt and wait included, is the smaller of
        `timeout_seconds` and the retry policy's own deadline.
        Ends on an answer (returned, even a 5xx once retries are spent), or raises.
        """
        method = method.upper()
        action = f"{method} {path}"
        self._require_connected(action)
        if self.throttle is not None:
            await self.throttle.admit(tag, client_key)
        policy = retry_policy or self.retry_policy
        deadline = overall_deadline(timeout_seconds, policy.deadline_seconds)
        if isinstance(headers, list):
            header_list = list(headers)
        else:
            header_list = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        if idempotency_key is not None:
            header_list.append((IDEMPOTENCY_HEADER, idempotency_key))
        if self.signer is not None and isinstance(content, bytes | str):
            raw = content.encode() if isinstance(content, str) else content
            message_id = idempotency_key or uuid.uuid4().hex
            header_list.extend(self.signer(message_id, raw).items())
        outbound = Outbound(
            method=method,
            path=path,
            query=query,
            headers=header_list,
            content=content,
            deadline=deadline,
            has_idempotency_key=idempotency_key is not None,
        )

        self.in_flight += 1
        try:
            return await self._attempt_until_done(policy, outbound)
        finally:
            self.in_flight -= 1

    async def _attempt_until_done(
        self, policy: RetryDecider, outbound: Outbound
    ) -> UpstreamResponse:
        action = outbound.action
        if self.retry_budget is not None:
            self.retry_budget.record_request()
        attempt = 0
        previous_delay: float | None = None
        target: Target | None = None
        # The last failed attempt: its answer stays open until the next attempt can go,
        # so that a breaker or ejection in between still leaves the upstream's answer.
        last: tuple[httpx.Response | None, BusinessProxyException] | None = None
        while True:
            attempt += 1
            try:
                if not self._connected:
                    raise NotConnected(
                        f"{action} on upstream {self.name!r}: disconnected while retrying",
                        upstream=self.name,
                    )
                target = self.targets.pick(avoid=target)
                probe = self.targets.before_request(target)
            except BusinessProxyException:
                # An answer the upstream gave beats our own refusal; without one, the
                # refusal (no healthy target, breaker open) says most.
                if last is None or last[0] is None:
                    raise
                return self._give_up(action, attempt - 1, *last)
            if last is not None and last[0] is not None:
                await last[0].aclose()
            error: BusinessProxyException
            response: httpx.Response | None = None
            self.metrics.attempt(retry=attempt > 1)
            try:
                response = await self._send_once(target, policy, outbound)
            except ConnectionFailure as failure:
                error = failure
                self.metrics.error(failure.kind)
            except BaseException:
                # Cancelled, or failed in a way that says nothing about the upstream.
                if probe:
                    self.targets.release_probe(target)
                raise
            else:
                if response.status_code < 400:
                    self.targets.record(target, success=True)
                    return UpstreamResponse(response, upstream=self.name, attempts=attempt)
                error = UpstreamError(
                    f"{action}: upstream {self.name!r} answered {response.status_code}",
                    upstream=self.name,
                    status=response.status_code,
                )
                self.metrics.error(f"status-{response.status_code // 100}xx")
            success = response is not None and response.status_code < 500
            self.targets.record(target, success=success, failure=error)

            retry_after = None
            if response is not None and response.status_code in RETRY_AFTER_STATUSES:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            failure_seen = AttemptFailure(
                attempt=attempt,
                method=outbound.method,
                error=error,
                has_idempotency_key=outbound.has_idempotency_key,
                retry_after_seconds=retry_after,
            )
            # A streamed body can go again only if it never left (a connect error).
            can_resend = outbound.replayable or not failure_seen.reached_upstream
            try:
                delay = (
                    await self._retry_delay(policy, failure_seen, previous_delay, outbound.deadline)
                    if can_resend
                    else None
                )
            except BaseException:
                if response is not None:
                    await response.aclose()
                raise
            if delay is None:
                return self._give_up(action, attempt, response, error)

            logger.debug(
                "retrying %s on upstream %r in %.3fs (attempt %d failed: %s)",
                action,
                self.name,
                delay,
                attempt,
                failure_seen.condition,
            )
            last = (response, error)
            previous_delay = delay
            try:
                await asyncio.sleep(delay)
            except BaseException:
                if response is not None:
                    await response.aclose()
                raise

    def _give_up(
        self,
        action: str,
        attempts: int,
        response: httpx.Response | None,
        error: BusinessProxyException,
    ) -> UpstreamResponse:
        """The last answer when there is one; else the failure, as RetriesExhausted after
        more than one attempt."""
        if response is not None:
            return UpstreamResponse(response, upstream=self.name, attempts=attempts)
        if attempts > 1:
            raise RetriesExhausted(
                f"{action} on upstream {self.name!r}: gave up after {attempts} "
                f"attempts; last: {error}",
                upstream=self.name,
                attempts=attempts,
                last_cause=error,
            ) from error
        raise error

    async def _retry_delay(
        self,
        policy: RetryDecider,
        failure: AttemptFailure,
        previous_delay: float | None,
        deadline: float | None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to stop here."""
        if not await policy.should_retry(failure):
            return None
        delay = policy.backoff_seconds(failure.attempt, previous_delay)
        if policy.respect_retry_after and failure.retry_after_seconds is not None:
            delay = max(delay, failure.retry_after_seconds)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return None
        if self.retry_budget is not None and not self.retry_budget.try_spend_retry():
            logger.debug("retry budget of upstream %r is spent; not retrying", self.name)
            return None
        return delay

    async def _send_once(
        self, target: Target, policy: RetryDecider, outbound: Outbound
    ) -> httpx.Response:
        """One attempt, up to the answer's headers; the body is left to stream."""
        action = outbound.action
        limit = policy.per_try_timeout_seconds
        if outbound.deadline is not None:
            remaining = outbound.deadline - time.monotonic()
            limit = remaining if limit is None else min(limit, remaining)
        url = f"{target.url}{outbound.path}"
        if outbound.query:
            url = f"{url}?{outbound.query}"
        timeout = self._default_timeout if limit is None else self.timeouts.capped(limit).as_dict()
        # The transport is called directly: AsyncClient.send adds auth, redirect and
        # cookie handling, which a proxy must not do (a cookie jar shared by every client
        # would replay one client's cookies for another), and about a third more time.
        headers = [*self._header_items, *outbound.headers]
        sending = target.send(outbound.method, url, headers, outbound.content, timeout)
        target.in_flight += 1
        try:
            if limit is None:
                return await sending
            async with asyncio.timeout(limit):
                return await sending
        except TimeoutError as error:
            raise UpstreamTimeout(
                f"{action} on upstream {self.name!r}: no answer within {limit:.3f}s",
                upstream=self.name,
                phase="deadline",
            ) from error
        except httpx.HTTPError as error:
            raise translate_httpx_error(error, upstream=self.name, action=action) from error
        except (httpx.InvalidURL, httpx.CookieConflict, httpx.StreamError) as error:
            raise translate_httpx_error(error, upstream=self.name, action=action) from error
        finally:
            target.in_flight -= 1
