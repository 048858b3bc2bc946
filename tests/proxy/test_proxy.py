"""HTTPXFastAPIProxy against real upstreams on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from bizproxy import (
    ConnectionFailure,
    HTTPXFastAPIProxy,
    InboxFull,
    NotConnected,
    RetriesExhausted,
    SignatureFailure,
    Throttled,
    UpstreamError,
    UpstreamTimeout,
)
from bizproxy.policies.retry import NO_RETRY, Backoff, RetryPolicy
from bizproxy.proxy import Timeouts
from tests.support.servers import (
    close_after_request,
    hang_after_request,
    reset_after_request,
    serve_raw,
    unused_port_url,
)
from tests.support.upstream_app import UpstreamApp

FAST = Backoff(initial_seconds=0.01, max_seconds=0.02)


def fast_policy(**overrides: object) -> RetryPolicy:
    settings: dict[str, object] = {"attempts": 3, "backoff": FAST, "budget_ratio": None}
    settings.update(overrides)
    return RetryPolicy(**settings)  # type: ignore[arg-type]


async def test_proxy_async_with_connects_and_disconnects(upstream_url: str) -> None:
    """`async with` connects on entry and disconnects on exit."""
    proxy = HTTPXFastAPIProxy(upstream_url)
    assert not proxy.is_connected
    async with proxy as entered:
        assert entered is proxy
        assert proxy.is_connected
    assert not proxy.is_connected


async def test_proxy_async_with_disconnects_when_body_raises(upstream_url: str) -> None:
    """An exception inside `async with` still disconnects the proxy."""
    proxy = HTTPXFastAPIProxy(upstream_url)
    with pytest.raises(RuntimeError, match="business failure"):
        async with proxy:
            raise RuntimeError("business failure")
    assert not proxy.is_connected


async def test_proxy_connect_and_disconnect_are_idempotent_and_concurrent(
    upstream_url: str,
) -> None:
    """Concurrent connect() calls take the pool once; repeated disconnect() is harmless."""
    proxy = HTTPXFastAPIProxy(upstream_url)
    await asyncio.gather(*(proxy.connect() for _ in range(10)))
    await proxy.connect()
    assert proxy.targets.targets[0].holders == 1
    await asyncio.gather(*(proxy.disconnect() for _ in range(10)))
    await proxy.disconnect()
    assert not proxy.is_connected


async def test_proxy_send_posts_json_and_returns_answer(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """send() posts the message as JSON to POST /send and returns the parsed answer."""
    async with HTTPXFastAPIProxy(upstream_url) as proxy:
        answer = await proxy.send({"order": 7, "items": ["a"]})
    assert answer == {"ok": True, "received": {"order": 7, "items": ["a"]}}
    [request] = upstream_app.received("/send")
    assert request.method == "POST"
    assert request.header("content-type") == "application/json"
    assert request.body == b'{"order":7,"items":["a"]}'


async def test_proxy_send_uses_configured_endpoint(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """send_method and send_path choose where messages go."""
    async with HTTPXFastAPIProxy(upstream_url, send_method="put", send_path="/echo/in") as proxy:
        answer = await proxy.send({"x": 1})
    assert answer["method"] == "PUT"
    assert answer["path"] == "/echo/in"


async def test_proxy_send_reuses_one_idempotency_key_on_every_attempt(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """Each attempt of one message carries the same Idempotency-Key; messages differ."""
    policy = fast_policy(retry_non_idempotent=True)
    proxy = HTTPXFastAPIProxy(upstream_url, policy, send_path="/flaky/k?fail=2&status=503")
    async with proxy:
        await proxy.send({"n": 1})
        await proxy.send({"n": 2})
    requests = upstream_app.received("/flaky/k")
    keys = [r.header("idempotency-key") for r in requests]
    assert len(requests) == 4  # the first message fails twice, then both succeed
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] != keys[0]
    assert all(key and len(key) == 32 for key in keys)


async def test_proxy_send_does_not_retry_post_that_reached_upstream(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """Without opt-in, a POST answered 503 is not retried: it may have been acted on."""
    proxy = HTTPXFastAPIProxy(upstream_url, fast_policy(), send_path="/flaky/p?fail=5&status=503")
    async with proxy:
        with pytest.raises(UpstreamError) as caught:
            await proxy.send({"pay": 10})
    assert caught.value.status == 503
    assert caught.value.upstream == upstream_url
    assert len(upstream_app.received("/flaky/p")) == 1


async def test_proxy_send_does_not_retry_post_after_connection_closed() -> None:
    """A POST whose connection closed after sending is not retried: it may have arrived."""
    with serve_raw(close_after_request) as url:
        async with HTTPXFastAPIProxy(url, fast_policy()) as proxy:
            with pytest.raises(ConnectionFailure) as caught:
                await proxy.send({"pay": 10})
    assert type(caught.value) is ConnectionFailure
    assert caught.value.kind == "reset"
    assert caught.value.reached_upstream is True
    assert isinstance(caught.value.__cause__, Exception)


async def test_proxy_get_after_reset_is_retried_until_exhausted() -> None:
    """An idempotent GET whose connection is reset is retried up to the attempt bound."""
    seen = 0

    async def count_and_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        await reset_after_request(reader, writer)

    with serve_raw(count_and_reset) as url:
        async with HTTPXFastAPIProxy(url, fast_policy(attempts=4)) as proxy:
            with pytest.raises(RetriesExhausted) as caught:
                await proxy.request("GET", "/anything")
    assert caught.value.attempts == 4
    assert isinstance(caught.value.last_cause, ConnectionFailure)
    assert caught.value.last_cause.kind == "reset"
    assert caught.value.__cause__ is caught.value.last_cause
    assert seen == 4


async def test_proxy_connection_refused_raises_connection_failure() -> None:
    """Nothing listening: each attempt fails to connect, then RetriesExhausted names the cause."""
    url = unused_port_url()
    async with HTTPXFastAPIProxy(url, fast_policy(attempts=3)) as proxy:
        with pytest.raises(RetriesExhausted) as caught:
            await proxy.send({"x": 1})
    cause = caught.value.last_cause
    assert caught.value.attempts == 3
    assert type(cause) is ConnectionFailure
    assert cause.kind == "connect-error"
    assert cause.reached_upstream is False
    assert "could not connect" in str(cause)


async def test_proxy_connection_refused_without_retry_raises_bare_failure() -> None:
    """With a single attempt, the ConnectionFailure itself is raised, chained to its cause."""
    async with HTTPXFastAPIProxy(unused_port_url(), NO_RETRY) as proxy:
        with pytest.raises(ConnectionFailure) as caught:
            await proxy.request("GET", "/")
    assert caught.value.kind == "connect-error"
    assert type(caught.value.__cause__).__module__.startswith("httpx")


async def test_proxy_hanging_upstream_raises_upstream_timeout() -> None:
    """An upstream that never answers raises UpstreamTimeout after the read timeout."""
    with serve_raw(hang_after_request) as url:
        timeouts = Timeouts(read_seconds=0.2)
        async with HTTPXFastAPIProxy(url, NO_RETRY, timeouts=timeouts) as proxy:
            with pytest.raises(UpstreamTimeout) as caught:
                await proxy.request("GET", "/slow")
    assert caught.value.phase == "read"
    assert caught.value.kind == "timeout"
    assert isinstance(caught.value, ConnectionFailure)


async def test_proxy_overall_deadline_bounds_every_retry(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """timeout_seconds covers all attempts: a slow upstream is cut at the deadline."""
    policy = fast_policy(attempts=5)
    async with HTTPXFastAPIProxy(upstream_url, policy) as proxy:
        started = asyncio.get_running_loop().time()
        with pytest.raises((UpstreamTimeout, RetriesExhausted)):
            await proxy.request("GET", "/slow", query="seconds=2", timeout_seconds=0.3)
        elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < 1.5
    assert len(upstream_app.received("/slow")) <= 2


async def test_proxy_send_401_raises_signature_failure(upstream_url: str) -> None:
    """An upstream 401 to send() is a SignatureFailure."""
    async with HTTPXFastAPIProxy(upstream_url, send_path="/status/401") as proxy:
        with pytest.raises(SignatureFailure, match=r"refused the request's credentials \(401\)"):
            await proxy.send({"x": 1})


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
async def test_proxy_send_error_status_raises_upstream_error(
    upstream_url: str, status: int
) -> None:
    """Other 4xx/5xx answers to send() raise UpstreamError with the status and body."""
    async with HTTPXFastAPIProxy(upstream_url, NO_RETRY, send_path=f"/status/{status}") as proxy:
        with pytest.raises(UpstreamError) as caught:
            await proxy.send({"x": 1})
    assert caught.value.status == status
    assert caught.value.body == f'{{"status": {status}}}'.encode()


async def test_proxy_throttler_refusal_raises_throttled_before_sending(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """A throttler that says no raises Throttled with the tag; nothing reaches the upstream."""
    asked: list[str | None] = []

    def only_gold(tag: str | None) -> bool:
        asked.append(tag)
        return tag == "gold"

    async with HTTPXFastAPIProxy(upstream_url, None, only_gold) as proxy:
        assert (await proxy.send({"x": 1}, tag="gold"))["ok"] is True
        with pytest.raises(Throttled) as caught:
            await proxy.send({"x": 2}, tag="bronze")
    assert caught.value.tag == "bronze"
    assert asked == ["gold", "bronze"]
    assert len(upstream_app.received("/send")) == 1


async def test_proxy_async_throttler_is_awaited(upstream_url: str) -> None:
    """A throttler may be a coroutine function."""

    async def never(tag: str | None) -> bool:
        return False

    async with HTTPXFastAPIProxy(upstream_url, throttler=never) as proxy:
        with pytest.raises(Throttled):
            await proxy.send({"x": 1}, tag="t")


async def test_proxy_send_before_connect_raises_not_connected(upstream_url: str) -> None:
    """Using a proxy that is not connected raises NotConnected, a ConnectionFailure."""
    proxy = HTTPXFastAPIProxy(upstream_url)
    with pytest.raises(NotConnected, match="not connected; call connect"):
        await proxy.send({"x": 1})
    async with proxy:
        pass
    with pytest.raises(ConnectionFailure):
        await proxy.request("GET", "/echo")


async def test_proxy_receive_ends_when_disconnected_with_consumer_waiting(
    upstream_url: str,
) -> None:
    """A consumer blocked in `async for` over receive() is released by disconnect()."""
    proxy = HTTPXFastAPIProxy(upstream_url)
    await proxy.connect()
    received: list[object] = []

    async def consume() -> None:
        async for message in proxy.receive():
            received.append(message)

    consumer = asyncio.create_task(consume())
    await proxy.deliver({"m": 1})
    await asyncio.sleep(0.05)
    await proxy.disconnect()
    await asyncio.wait_for(consumer, timeout=2)
    assert received == [{"m": 1}]


async def test_proxy_receive_hands_out_messages_left_at_disconnect(upstream_url: str) -> None:
    """Messages delivered but not consumed before disconnect are still received, in order."""
    proxy = HTTPXFastAPIProxy(upstream_url)
    await proxy.connect()
    ids = [await proxy.deliver({"m": n}) for n in range(3)]
    await proxy.disconnect()
    received = [message async for message in proxy.receive()]
    assert received == [{"m": 0}, {"m": 1}, {"m": 2}]
    assert len(set(ids)) == 3


async def test_proxy_full_inbox_raises_inbox_full(upstream_url: str) -> None:
    """deliver() into a full inbox raises InboxFull with a retry hint; nothing is dropped."""
    async with HTTPXFastAPIProxy(upstream_url, inbox_max_messages=2) as proxy:
        await proxy.deliver(1)
        await proxy.deliver(2)
        with pytest.raises(InboxFull, match=r"is full \(2 messages waiting") as caught:
            await proxy.deliver(3)
        assert caught.value.retry_after == 1.0
        assert proxy.inbox_size == 2


async def test_proxy_deliver_when_disconnected_raises_not_connected(upstream_url: str) -> None:
    """deliver() to a disconnected proxy raises NotConnected instead of queueing forever."""
    proxy = HTTPXFastAPIProxy(upstream_url)
    with pytest.raises(NotConnected):
        await proxy.deliver({"m": 1})


async def test_proxy_leaves_no_task_running_after_disconnect(upstream_url: str) -> None:
    """After disconnect, no task the proxy started is still alive."""
    before = asyncio.all_tasks()
    async with HTTPXFastAPIProxy(upstream_url) as proxy:
        await proxy.send({"x": 1})
        await proxy.request("GET", "/echo/x")
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


async def test_proxy_retries_idempotent_get_on_503_then_succeeds(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """A GET answered 503 twice is retried and the third answer (200) is returned."""
    async with HTTPXFastAPIProxy(upstream_url, fast_policy()) as proxy:
        async with await proxy.request("GET", "/flaky/g", query="fail=2") as response:
            body = await response.aread()
    assert response.status_code == 200
    assert response.attempts == 3
    assert body == b'{"attempt": 3}'


async def test_proxy_returns_last_answer_when_retries_end_on_a_status(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """When every attempt answers 503, request() passes the last answer back."""
    async with HTTPXFastAPIProxy(upstream_url, fast_policy(attempts=2)) as proxy:
        async with await proxy.request("GET", "/flaky/z", query="fail=9") as response:
            await response.aread()
    assert response.status_code == 503
    assert response.attempts == 2
    assert len(upstream_app.received("/flaky/z")) == 2


async def test_proxy_honours_retry_after_before_retrying(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """A 503 with Retry-After: 1 is retried no sooner than one second later."""
    async with HTTPXFastAPIProxy(upstream_url, fast_policy()) as proxy:
        query = "fail=1&retry_after=1"
        async with await proxy.request("GET", "/flaky/ra", query=query) as response:
            await response.aread()
    first, second = upstream_app.received("/flaky/ra")
    assert response.status_code == 200
    assert second.at - first.at >= 0.95


async def test_proxy_plugin_retry_policy_receives_exception_and_attempt(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """A seed-style callable (exception, attempt) -> bool decides retries, still bounded."""
    calls: list[tuple[str, int]] = []

    def retry_teapots(error: BaseException, attempt: int) -> bool:
        calls.append((type(error).__name__, attempt))
        return isinstance(error, UpstreamError) and error.status == 418

    async with HTTPXFastAPIProxy(upstream_url, retry_teapots) as proxy:
        async with await proxy.request("GET", "/flaky/tea", query="fail=9&status=418") as answer:
            await answer.aread()
    assert answer.status_code == 418
    assert calls == [("UpstreamError", 1), ("UpstreamError", 2)]
    assert len(upstream_app.received("/flaky/tea")) == 3


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:99999", "not a url", "ftp://127.0.0.1:21", "http://:80"]
)
def test_proxy_refuses_a_base_url_that_cannot_be_an_upstream(base_url: str) -> None:
    """A base URL without http(s), a host or a valid port is a programming error, said at once."""
    with pytest.raises(ValueError, match="expected an upstream base URL"):
        HTTPXFastAPIProxy(base_url)


async def test_proxy_broken_retry_plugin_means_no_retry(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """A retry plug-in that raises is treated as "do not retry": the answer comes back."""

    def broken(error: BaseException, attempt: int) -> bool:
        raise ValueError("plug-in bug")

    async with HTTPXFastAPIProxy(upstream_url, broken) as proxy:
        async with await proxy.request("GET", "/flaky/b", query="fail=9") as response:
            await response.aread()
    assert response.status_code == 503
    assert len(upstream_app.received("/flaky/b")) == 1


async def test_proxy_breaker_opening_between_attempts_keeps_the_upstream_answer(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """When the breaker opens after a failed attempt, the upstream's answer is returned,
    not the breaker's own refusal."""
    from bizproxy.policies.breaker import CircuitBreaker

    breaker = CircuitBreaker(1, 30.0, upstream="u")
    async with HTTPXFastAPIProxy(upstream_url, fast_policy(), breaker=breaker) as proxy:
        async with await proxy.request("GET", "/flaky/br", query="fail=9") as response:
            body = await response.aread()
    assert response.status_code == 503
    assert body == b'{"attempt": 1}'
    assert len(upstream_app.received("/flaky/br")) == 1


async def test_proxy_stops_retrying_once_disconnected(
    upstream_url: str, upstream_app: UpstreamApp
) -> None:
    """A request waiting to retry when the proxy disconnects makes no further attempt."""
    policy = RetryPolicy(attempts=5, backoff=Backoff(0.3, 0.3, jitter="none"), budget_ratio=None)
    proxy = HTTPXFastAPIProxy(upstream_url, policy)
    await proxy.connect()
    pending = asyncio.create_task(proxy.request("GET", "/flaky/d", query="fail=9"))
    await asyncio.sleep(0.1)
    await proxy.disconnect()
    response = await pending
    await response.aclose()
    assert response.status_code == 503
    assert len(upstream_app.received("/flaky/d")) == 1
