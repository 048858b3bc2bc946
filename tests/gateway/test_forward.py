"""Forward routes on real traffic: bizproxy and its upstream both served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bizproxy.gateway import Gateway
from tests.support.gateway import running_gateway
from tests.support.servers import hang_after_request, serve_raw, unused_port_url
from tests.support.upstream_app import UpstreamApp

CONFIG = """
version: 1
server:
  max_body: 1KiB
  trusted_proxies: [{trusted}]
retry_policies:
  quick: {{attempts: 2, backoff: {{initial: 10ms, max: 20ms}}}}
throttles:
  tight: {{rate: 1/min, burst: 1}}
upstreams:
  app:
    url: {upstream}
    retry: quick
    pool: {{max_connections: 5, max_keepalive: 5}}
routes:
  - path: /orders/{{order_id}}
    methods: [GET]
    forward:
      upstream: app
      path: "/echo/orders/{{{{ path.order_id }}}}"
  - path: /files/{{rest:path}}
    methods: [GET]
    forward: {{upstream: app, path: "/echo/static/{{{{ path.rest }}}}"}}
  - path: /tenant
    methods: [GET]
    forward:
      upstream: app
      path: /echo/tenant
      headers: {{X-Tenant: "{{{{ query.t }}}}"}}
  - path: /shaped/{{kind}}
    methods: [POST]
    forward:
      upstream: app
      path: /echo/shaped
      query: {{kind: "{{{{ path.kind }}}}"}}
      body: '{{"kind": "{{{{ path.kind }}}}", "n": {{{{ body.n }}}}, "m": "{{{{ method }}}}"}}'
  - path: /throttled
    methods: [GET]
    tag: tight
    forward: {{upstream: app, path: /echo/t}}
  - path: /echo/{{rest:path}}
    methods: [GET, POST, PUT, DELETE]
    forward: {{upstream: app}}
  - path: /status/{{code}}
    methods: [GET]
    forward: {{upstream: app}}
  - path: /sse
    methods: [GET]
    forward: {{upstream: app}}
  - path: /gzip
    methods: [GET]
    forward: {{upstream: app}}
  - path: /cookies
    methods: [GET]
    forward: {{upstream: app}}
  - path: /redirect
    methods: [GET]
    forward: {{upstream: app}}
  - path: /hop
    methods: [GET]
    forward: {{upstream: app}}
  - path: /slow
    methods: [GET]
    forward: {{upstream: app, timeout: 10s}}
"""


@pytest.fixture
def gateway(upstream_url: str, tmp_path: Path) -> Iterator[tuple[str, Gateway]]:
    config = CONFIG.format(upstream=upstream_url, trusted="10.9.9.9")
    with running_gateway(config, tmp_path) as served:
        yield served


@pytest.fixture
def url(gateway: tuple[str, Gateway]) -> str:
    return gateway[0]


def echo(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    return dict(response.json())


def header_names(received: dict[str, object]) -> list[str]:
    return [name for name, _ in received["headers"]]  # type: ignore[attr-defined]


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as written (clients normalise dot-segments away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_forward_renders_path_and_keeps_query_bytes(url: str) -> None:
    """Path templates render; repeated keys, order and percent-encoding of the query survive."""
    received = echo(httpx.get(f"{url}/orders/42?a=1&a=2&q=x%2By&z=%7E"))
    assert received["path"] == "/echo/orders/42"
    assert received["query"] == "a=1&a=2&q=x%2By&z=%7E"
    assert received["method"] == "GET"


def test_forward_percent_encodes_values_rendered_into_the_path(
    url: str, upstream_app: UpstreamApp
) -> None:
    """A path value cannot add a query, a fragment or a segment: it is encoded."""
    echo(httpx.get(f"{url}/orders/a%3Fx=1%23frag%2Fup"))
    [request] = upstream_app.received("/echo/orders")
    assert request.path == "/echo/orders/a?x=1#frag/up"
    assert request.query == ""
    raw = [v for k, v in request.headers if k == "host"]
    assert raw and raw[0].startswith("127.0.0.1:")


def test_forward_rest_of_path_keeps_slashes(url: str) -> None:
    """A {rest:path} parameter carries slashes into the upstream path."""
    received = echo(httpx.get(f"{url}/files/css/site/main.css"))
    assert received["path"] == "/echo/static/css/site/main.css"


@pytest.mark.parametrize("target", ["/files/a/../../secret", "/files/a/%2e%2e/secret", "/files/.."])
def test_forward_refuses_dot_segments_in_rest_of_path(url: str, target: str) -> None:
    """Dot-segments, plain or encoded, never climb out of the upstream prefix: 400."""
    status, body = raw_get(url, target)
    assert status == 400
    error = json.loads(body)["error"]
    assert error["type"] == "BadPath"
    assert error["message"] == "path parameter 'rest' may not contain '.' or '..' segments"


def test_forward_drops_hop_by_hop_request_headers(url: str, upstream_app: UpstreamApp) -> None:
    """Connection, the headers it names, Keep-Alive, TE and Proxy-* never reach the upstream."""
    headers = {
        "Connection": "keep-alive, X-Hop-In",
        "X-Hop-In": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic eA==",
        "X-End-To-End": "kept",
    }
    received = echo(httpx.get(f"{url}/echo/h", headers=headers))
    names = header_names(received)
    for dropped in ("x-hop-in", "keep-alive", "te", "proxy-authorization"):
        assert dropped not in names
    assert "x-hop-in" not in str(dict(received["headers"]).get("connection", ""))  # type: ignore[arg-type]
    assert "x-end-to-end" in names


def test_forward_drops_hop_by_hop_response_headers(url: str) -> None:
    """Hop-by-hop headers of the upstream's answer are dropped; the rest pass."""
    response = httpx.get(f"{url}/hop")
    assert response.status_code == 200
    assert "x-hop-out" not in response.headers
    assert "keep-alive" not in response.headers
    assert "proxy-authenticate" not in response.headers
    assert response.headers["x-kept"] == "yes"


def test_forward_sets_forwarded_headers_for_untrusted_peer(url: str) -> None:
    """From an untrusted peer, X-Forwarded-For is replaced by the peer's own address."""
    received = echo(
        httpx.get(f"{url}/echo/f", headers={"X-Forwarded-For": "6.6.6.6", "Host": "shop.test"})
    )
    headers = dict(received["headers"])  # type: ignore[arg-type]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "shop.test"
    assert headers["host"].startswith("127.0.0.1:")


def test_forward_appends_forwarded_for_from_trusted_peer(upstream_url: str, tmp_path: Path) -> None:
    """From a trusted proxy, X-Forwarded-For is appended to, not replaced."""
    config = CONFIG.format(upstream=upstream_url, trusted="127.0.0.1")
    with running_gateway(config, tmp_path) as (url, _):
        received = echo(httpx.get(f"{url}/echo/f", headers={"X-Forwarded-For": "6.6.6.6"}))
    assert dict(received["headers"])["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"  # type: ignore[arg-type]


def test_forward_propagates_or_creates_request_id(url: str) -> None:
    """X-Request-ID is passed on when given, created when not, and returned either way."""
    given = httpx.get(f"{url}/echo/r", headers={"X-Request-ID": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    assert dict(given.json()["headers"])["x-request-id"] == "req-123"
    created = httpx.get(f"{url}/echo/r")
    assert len(created.headers["x-request-id"]) == 32
    assert dict(created.json()["headers"])["x-request-id"] == created.headers["x-request-id"]


def test_forward_renders_header_templates(url: str) -> None:
    """Header templates render from the request."""
    received = echo(httpx.get(f"{url}/tenant?t=acme"))
    assert dict(received["headers"])["x-tenant"] == "acme"  # type: ignore[arg-type]


def test_forward_refuses_header_template_with_line_break(url: str) -> None:
    """A rendered header value with CR or LF is refused with 400."""
    response = httpx.get(f"{url}/tenant?t=a%0d%0aX-Injected:%201")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadHeader"
    assert response.json()["error"]["message"] == (
        "header 'X-Tenant' would contain a line break or another control character; refused"
    )


def test_forward_missing_template_value_is_a_clear_400(url: str) -> None:
    """A template that needs a value the request lacks answers 400, naming it."""
    response = httpx.get(f"{url}/tenant")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "TemplateError"
    assert error["message"] == (
        "header 'X-Tenant' needs a value the request lacks: no value named 't'"
    )


def test_forward_body_and_query_templates_see_body_method_and_path(url: str) -> None:
    """Body and query templates see the parsed JSON body, the method and path parameters."""
    received = echo(httpx.post(f"{url}/shaped/gift", json={"n": 3}))
    assert received["query"] == "kind=gift"
    assert json.loads(str(received["body"])) == {"kind": "gift", "n": 3, "m": "POST"}


def test_forward_streams_server_sent_events_piece_by_piece(url: str) -> None:
    """The first event arrives long before the upstream finishes its stream."""
    started = time.monotonic()
    with httpx.stream("GET", f"{url}/sse?events=3&gap=0.6", timeout=10) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        first_at = time.monotonic() - started
        rest = b"".join(chunks)
    assert response.headers["content-type"] == "text/event-stream"
    assert first == b"data: event 0\n\n"
    assert first_at < 0.5
    assert rest == b"data: event 1\n\ndata: event 2\n\n"


def test_forward_passes_gzip_bytes_with_consistent_headers(url: str) -> None:
    """A gzip answer stays gzip: the bytes, Content-Encoding and Content-Length agree."""
    with httpx.stream("GET", f"{url}/gzip") as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) == len(raw)
    assert gzip.decompress(raw) == b"compressed hello " * 100


def test_forward_keeps_each_set_cookie_separate(url: str) -> None:
    """Two Set-Cookie headers arrive as two headers."""
    response = httpx.get(f"{url}/cookies")
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


def test_forward_passes_redirects_back(url: str) -> None:
    """A redirect is answered to the client, not followed."""
    response = httpx.get(f"{url}/redirect")
    assert response.status_code == 302
    assert response.headers["location"] == "/echo/target"


def test_forward_bodyless_request_has_no_body(url: str, upstream_app: UpstreamApp) -> None:
    """A GET without a body goes without one: no Transfer-Encoding, no Content-Length."""
    echo(httpx.get(f"{url}/echo/nobody"))
    [request] = upstream_app.received("/echo/nobody")
    names = [name for name, _ in request.headers]
    assert "transfer-encoding" not in names
    assert "content-length" not in names
    assert request.body == b""


def test_forward_post_body_arrives_with_its_length(url: str, upstream_app: UpstreamApp) -> None:
    """A POST body is forwarded byte for byte with a matching Content-Length."""
    payload = b'{"x": "\xc3\xa9"}'
    echo(
        httpx.post(
            f"{url}/echo/body", content=payload, headers={"content-type": "application/json"}
        )
    )
    [request] = upstream_app.received("/echo/body")
    assert request.body == payload
    assert request.header("content-length") == str(len(payload))


def test_forward_refuses_declared_body_over_limit_before_reading(url: str) -> None:
    """A Content-Length over server.max_body answers 413 at once."""
    response = httpx.post(f"{url}/echo/big", content=b"x" * 2048)
    assert response.status_code == 413
    assert (
        response.json()["error"]["message"] == "request body is larger than the limit of 1024 bytes"
    )


def test_forward_refuses_streamed_body_over_limit(url: str, upstream_app: UpstreamApp) -> None:
    """A chunked body is cut off with 413 as soon as it passes server.max_body."""

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 300

    response = httpx.post(f"{url}/echo/big", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "BodyTooLarge"


def test_forward_head_works_on_get_routes(url: str) -> None:
    """HEAD on a GET route is forwarded as HEAD and answered without a body."""
    response = httpx.head(f"{url}/status/200")
    assert response.status_code == 200
    assert response.content == b""


def test_forward_wrong_method_gets_405_with_allow(url: str) -> None:
    """A method the route does not take answers 405 and lists the allowed ones."""
    response = httpx.delete(f"{url}/orders/1")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["error"]["type"] == "MethodNotAllowed"


def test_forward_no_route_gets_404(url: str) -> None:
    """A path no route matches answers 404 with bizproxy's JSON error body."""
    response = httpx.get(f"{url}/nowhere")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "type": "NoRoute",
        "message": "no route matches GET /nowhere",
        "request_id": response.headers["x-request-id"],
    }


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_forward_upstream_errors_pass_through_untouched(url: str, status: int) -> None:
    """An upstream's error answer reaches the client as it was, after retries are spent."""
    response = httpx.get(f"{url}/status/{status}")
    assert response.status_code == status
    assert response.content == f'{{"status": {status}}}'.encode()


def test_forward_throttled_answers_429_with_headers(url: str) -> None:
    """Over budget: 429 with Retry-After and the RateLimit headers."""
    assert httpx.get(f"{url}/throttled").status_code == 200
    response = httpx.get(f"{url}/throttled")
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["ratelimit-policy"] == '"tight";q=1;w=60'
    assert response.headers["ratelimit"].startswith('"tight";r=0;t=')
    error = response.json()["error"]
    assert error["type"] == "Throttled"
    assert error["tag"] == "tight"
    assert error["route"] == "/throttled"


def test_forward_unreachable_upstream_answers_502(tmp_path: Path) -> None:
    """Nothing listening upstream: 502 with the error type, route and upstream named."""
    config = CONFIG.format(upstream=unused_port_url(), trusted="10.9.9.9")
    with running_gateway(config, tmp_path) as (url, _):
        response = httpx.get(f"{url}/orders/1")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "RetriesExhausted"
    assert error["attempts"] == 2
    assert error["route"] == "/orders/{order_id}"
    assert error["upstream"] == "app"


def test_forward_hanging_upstream_answers_504(tmp_path: Path) -> None:
    """An upstream that never answers: 504 once the route's timeout passes."""
    with serve_raw(hang_after_request) as hanging:
        config = CONFIG.format(upstream=hanging, trusted="10.9.9.9").replace(
            "timeout: 10s", "timeout: 300ms"
        )
        with running_gateway(config, tmp_path) as (url, _):
            response = httpx.get(f"{url}/slow", timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["type"] in {"UpstreamTimeout", "RetriesExhausted"}


async def test_forward_client_disconnect_cancels_upstream_and_frees_the_pool(
    gateway: tuple[str, Gateway], upstream_app: UpstreamApp
) -> None:
    """Clients that give up cancel their upstream requests; the pool never runs dry."""
    url, served = gateway
    proxy = served.proxy("app")
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(30):
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/slow", params={"seconds": "2"}, timeout=0.1)
        deadline = time.monotonic() + 5
        while proxy.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert proxy.in_flight == 0
        response = await client.get("/echo/after", timeout=5)
    assert response.status_code == 200


def test_forward_keeps_no_cookies_between_clients(url: str, upstream_app: UpstreamApp) -> None:
    """Cookies an upstream sets for one client are never sent upstream for another."""
    assert httpx.get(f"{url}/cookies").status_code == 200
    echo(httpx.get(f"{url}/echo/after-cookies"))
    [request] = upstream_app.received("/echo/after-cookies")
    assert request.header("cookie") is None


@pytest.mark.parametrize("target", ["/orders/%2e%2e", "/orders/..", "/orders/."])
def test_forward_refuses_dot_segment_in_a_single_segment_parameter(url: str, target: str) -> None:
    """A one-segment parameter that is '.' or '..' would climb the upstream path: 400."""
    status, body = raw_get(url, target)
    assert status == 400
    error = json.loads(body)["error"]
    assert error["type"] == "BadPath"
    assert error["message"] == "path parameter 'order_id' may not contain '.' or '..' segments"


def test_forward_body_template_values_cannot_break_out_of_their_json_string(
    url: str, upstream_app: UpstreamApp
) -> None:
    """A quote in a value rendered into a JSON body template stays inside its string."""
    evil = 'x", "admin": true, "z": "y'
    received = echo(httpx.post(f"{url}/shaped/{evil}", json={"n": 3}))
    assert json.loads(str(received["body"])) == {"kind": evil, "n": 3, "m": "POST"}


def test_forward_body_template_renders_values_as_json(url: str) -> None:
    """A body that is not JSON (Infinity) is 400; an object where a number goes is
    rendered as JSON, not as a Python repr."""
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{url}/shaped/k", content=b'{"n": Infinity}', headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "MalformedJSON"
    response = httpx.post(f"{url}/shaped/k", json={"n": {"deep": [1]}})
    assert response.status_code == 200
    assert json.loads(response.json()["body"])["n"] == {"deep": [1]}


def test_forward_deeply_nested_json_answers_400(upstream_url: str, tmp_path: Path) -> None:
    """JSON nested beyond the parser's depth (well under max_body) is 400, not a 500."""
    config = CONFIG.format(upstream=upstream_url, trusted="10.9.9.9").replace("1KiB", "1MiB")
    nested = b'{"n": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with running_gateway(config, tmp_path) as (url, _):
        response = httpx.post(
            f"{url}/shaped/k", content=nested, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "MalformedJSON",
        "message": "request body is not valid JSON: nested too deeply",
        "route": "/shaped/{kind}",
        "upstream": "app",
        "request_id": response.headers["x-request-id"],
    }


def test_forward_refuses_control_characters_in_templated_headers(url: str) -> None:
    """NUL, DEL and other control characters in a rendered header value answer 400."""
    for value in ("a%00b", "a%7Fb", "a%1Bb"):
        response = httpx.get(f"{url}/tenant?t={value}")
        assert response.status_code == 400, value
        assert response.json()["error"]["type"] == "BadHeader"


async def test_forward_upstream_breaking_off_mid_body_closes_the_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream that stops after part of its body: the client sees a cut answer, the
    log has one WARNING and no traceback."""
    import logging

    from tests.support.gateway import gateway_in_this_loop

    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.transport.abort()

    caplog.set_level(logging.WARNING)
    with serve_raw(half_answer) as broken:
        config = CONFIG.format(upstream=broken, trusted="10.9.9.9")
        async with gateway_in_this_loop(config, tmp_path) as (url, _):
            async with httpx.AsyncClient() as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(f"{url}/slow")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("broke off its answer to GET /slow" in w for w in warnings), warnings
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"


async def test_forward_client_leaving_after_a_streamed_upload_cancels_the_upstream_call(
    upstream_app: UpstreamApp, upstream_url: str, tmp_path: Path
) -> None:
    """A client that streams a large body, then gives up waiting, cancels the upstream call."""
    from tests.support.gateway import gateway_in_this_loop

    config = f"""
version: 1
upstreams:
  app: {{url: "{upstream_url}"}}
routes:
  - path: /upload-then-wait
    methods: [POST]
    forward: {{upstream: app, path: /slow}}
"""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"u" * 65536

    async with gateway_in_this_loop(config, tmp_path) as (url, served):
        proxy = served.proxy("app")
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(f"{url}/upload-then-wait?seconds=5", content=body(), timeout=1.0)
        deadline = time.monotonic() + 3
        while proxy.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert proxy.in_flight == 0
    [request] = upstream_app.received("/slow")
    assert len(request.body) == 4 * 65536


def test_forward_refuses_a_streamed_body_that_outgrows_the_limit_midway(
    upstream_url: str, tmp_path: Path
) -> None:
    """A body already streaming to the upstream (past the 64 KiB held for retries) that
    passes server.max_body answers 413, not a 502 about the upstream."""
    config = CONFIG.format(upstream=upstream_url, trusted="10.9.9.9").replace("1KiB", "100KiB")

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 32768

    with running_gateway(config, tmp_path) as (url, _):
        response = httpx.post(f"{url}/echo/big", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "BodyTooLarge"


@pytest.mark.parametrize("given", ["x" * 201, "bad id <script>", ""])
def test_forward_replaces_a_request_id_that_is_not_a_plain_token(url: str, given: str) -> None:
    """An X-Request-ID that is too long or holds spaces or markup is replaced by a new one."""
    response = httpx.get(f"{url}/echo/r", headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] != given
    assert len(response.headers["x-request-id"]) == 32
