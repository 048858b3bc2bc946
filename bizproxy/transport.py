"""The outbound transport under `httpx.AsyncClient`: aiohttp's connection pool, chosen by
measurement (bench/transports.py: about 4x httpx's default pool at 32 connections).

It behaves as a proxy needs: the URL goes out byte for byte (no re-encoding of the
path or query), no cookies are kept between clients, no headers are added (User-Agent,
Accept, Accept-Encoding, Content-Type), bodies are not decoded, aiohttp's own silent
resend of a broken idempotent request is off (the retry policy decides and counts), and
every aiohttp failure becomes the httpx exception that says what happened, so that
`proxy.translate_httpx_error` stays the one boundary to bizproxy's exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

# Most specific first.
_AIOHTTP_TO_HTTPX: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.NetworkError),
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientError, httpx.TransportError),
)

_SKIPPED_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def as_httpx_error(error: BaseException) -> httpx.TransportError | None:
    """The httpx exception for an aiohttp failure, chained to it; None if not aiohttp's."""
    for aiohttp_type, httpx_type in _AIOHTTP_TO_HTTPX:
        if isinstance(error, aiohttp_type):
            translated = httpx_type(str(error) or type(error).__name__)
            translated.__cause__ = error
            return translated
    return None


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as error:
            translated = as_httpx_error(error)
            if translated is None:
                raise
            raise translated from error

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one aiohttp session, created on first use."""

    def __init__(self, *, max_connections: int, keepalive_expiry_seconds: float) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry_seconds = keepalive_expiry_seconds
        self._session: aiohttp.ClientSession | None = None

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, keepalive_timeout=self.keepalive_expiry_seconds
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIPPED_AUTO_HEADERS,
            auto_decompress=False,
            trust_env=False,
        )
        # aiohttp resends a broken idempotent request once by itself; there is no public
        # switch for it (aiohttp 3.14), and bizproxy's retry policy must see every attempt.
        session._retry_connection = False
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream
        headers = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in request.headers.raw
            if key.lower() not in (b"transfer-encoding", b"host")
        ]
        timeout = request.extensions.get("timeout", {})
        response = await self.send(request.method, str(request.url), headers, data, timeout)
        response.request = request
        return response

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        data: Any,
        timeout: dict[str, float | None],
    ) -> httpx.Response:
        """Send without building an httpx.Request first: the proxy's hot path.

        `url` is sent as written (already percent-encoded); aiohttp sets Host.
        """
        session = self._session
        if session is None:
            session = self._session = self._new_session()
        try:
            response = await session.request(
                method,
                URL(url, encoded=True),
                headers=CIMultiDict(headers),
                data=data,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    # aiohttp's `connect` covers the wait for a pooled connection too.
                    connect=timeout.get("pool"),
                ),
            )
        except Exception as error:
            translated = as_httpx_error(error)
            if translated is None:
                raise
            raise translated from error
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
