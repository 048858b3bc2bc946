"""The one boundary where httpx exceptions become bizproxy exceptions."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import httpx
import pytest

from bizproxy import BusinessProxyException, ConnectionFailure, HTTPXFastAPIProxy, UpstreamTimeout
from bizproxy.policies.retry import NO_RETRY
from bizproxy.proxy import _HTTPX_ERRORS, parse_retry_after, translate_httpx_error


def httpx_exception_classes() -> list[type[Exception]]:
    return [
        obj
        for name in dir(httpx)
        if inspect.isclass(obj := getattr(httpx, name)) and issubclass(obj, Exception)
    ]


def test_translate_has_a_row_for_every_httpx_exception_class() -> None:
    """A new httpx exception class without a row of its own fails this test."""
    missing = [cls.__name__ for cls in httpx_exception_classes() if cls not in _HTTPX_ERRORS]
    assert missing == []


@pytest.mark.parametrize("cls", httpx_exception_classes(), ids=lambda cls: cls.__name__)
def test_translate_never_returns_an_httpx_type(cls: type[Exception]) -> None:
    """Every httpx exception becomes a BusinessProxyException that names the upstream."""
    request = httpx.Request("GET", "http://127.0.0.1/")
    if cls is httpx.HTTPStatusError:
        error: Exception = cls("boom", request=request, response=httpx.Response(500))
    elif issubclass(cls, httpx.StreamError) and cls is not httpx.StreamError:
        error = cls()
    else:
        error = cls("boom")
    translated = translate_httpx_error(error, upstream="orders", action="GET /x")
    assert isinstance(translated, BusinessProxyException)
    assert not type(translated).__module__.startswith("httpx")
    assert "upstream 'orders'" in str(translated)


def test_translate_timeouts_keep_their_phase() -> None:
    """Connect and pool timeouts say nothing was sent; read timeouts say it may have been."""
    connect = translate_httpx_error(httpx.ConnectTimeout("t"), upstream="u", action="GET /")
    read = translate_httpx_error(httpx.ReadTimeout("t"), upstream="u", action="GET /")
    assert isinstance(connect, UpstreamTimeout) and connect.phase == "connect"
    assert connect.reached_upstream is False
    assert isinstance(read, UpstreamTimeout) and read.phase == "read"
    assert read.reached_upstream is True


async def test_proxy_dns_failure_raises_connection_failure() -> None:
    """A name that does not resolve surfaces as ConnectionFailure (kind connect-error)."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)

    transport = httpx.MockTransport(refuse)
    async with HTTPXFastAPIProxy("http://orders.invalid", NO_RETRY, transport=transport) as proxy:
        with pytest.raises(ConnectionFailure) as caught:
            await proxy.request("GET", "/x")
    assert caught.value.kind == "connect-error"
    assert "Name or service not known" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after_reads_seconds_and_dates(
    header: str | None, expected: float | None
) -> None:
    """Retry-After is read in both forms; a past date means no wait; junk is ignored."""
    assert parse_retry_after(header) == expected


def test_parse_retry_after_future_date_gives_remaining_seconds() -> None:
    """An HTTP-date in the future gives the seconds until then."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0


class _Pieces(httpx.AsyncByteStream):
    def __init__(self, *pieces: bytes, then_fail: bool = False) -> None:
        self._pieces = pieces
        self._then_fail = then_fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece
        if self._then_fail:
            raise httpx.ReadError("cut off")


async def test_proxy_reads_a_body_from_any_httpx_transport_piece_by_piece() -> None:
    """A transport other than bizproxy's own still streams: pieces in order, then b""."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Pieces(b"ab", b"cd"))

    transport = httpx.MockTransport(answer)
    async with HTTPXFastAPIProxy("http://orders.test", NO_RETRY, transport=transport) as proxy:
        response = await proxy.request("GET", "/x")
        pieces = [await response.read_chunk() for _ in range(3)]
        await response.aclose()
    assert pieces == [b"ab", b"cd", b""]


async def test_proxy_body_cut_off_in_any_transport_is_a_reset() -> None:
    """A transport failing mid-body surfaces as ConnectionFailure (reset), not an httpx error."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Pieces(b"ab", then_fail=True))

    transport = httpx.MockTransport(answer)
    async with HTTPXFastAPIProxy("http://orders.test", NO_RETRY, transport=transport) as proxy:
        response = await proxy.request("GET", "/x")
        assert await response.read_chunk() == b"ab"
        with pytest.raises(ConnectionFailure) as caught:
            await response.read_chunk()
        await response.aclose()
    assert caught.value.kind == "reset"
    assert isinstance(caught.value.__cause__, httpx.ReadError)
