"""Operational endpoints, the OpenAPI document, and an upstream nobody here wrote (httpbin)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bizproxy.gateway import Gateway
from tests.support.gateway import running_gateway
from tests.support.servers import serve_app

CONFIG = """
version: 1
server:
  admin_token: "${{ADMIN_TOKEN:-}}"
upstreams:
  app:
    url: {upstream}
    headers: {{Authorization: "Bearer ${{APP_TOKEN}}"}}
routes:
  - path: /orders/{{order_id}}
    methods: [GET]
    forward: {{upstream: app, path: "/echo/{{{{ path.order_id }}}}"}}
  - path: /files/{{rest:path}}
    methods: [GET]
    forward: {{upstream: app}}
  - path: /hooks/pay
    methods: [POST]
    body_schema: pay.schema.json
    deliver: {{upstream: app}}
"""

PAY_SCHEMA = {"type": "object", "properties": {"amount": {"type": "integer"}}}


@pytest.fixture
def gateway(upstream_url: str, tmp_path: Path) -> Iterator[tuple[str, Gateway]]:
    (tmp_path / "pay.schema.json").write_text(json.dumps(PAY_SCHEMA))
    config = CONFIG.format(upstream=upstream_url)
    with running_gateway(config, tmp_path, APP_TOKEN="very-secret-token") as served:
        yield served


def test_operations_live_and_ready(gateway: tuple[str, Gateway]) -> None:
    """Liveness answers at once; readiness once every upstream proxy is connected."""
    url, _ = gateway
    assert httpx.get(f"{url}/-/live").json() == {"status": "live"}
    ready = httpx.get(f"{url}/-/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_operations_not_ready_before_connect(upstream_url: str, tmp_path: Path) -> None:
    """Before its proxies connect, the gateway answers 503 on readiness, naming them."""
    from bizproxy.runtime import load_gateway

    (tmp_path / "pay.schema.json").write_text(json.dumps(PAY_SCHEMA))
    (tmp_path / "routes.yaml").write_text(CONFIG.format(upstream=upstream_url))
    gateway = load_gateway(tmp_path / "routes.yaml", environ={"APP_TOKEN": "t"})
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://bizproxy") as client:
        response = await client.get("/-/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "waiting_for": ["app"]}


def test_operations_table_shows_routes_and_no_secrets(gateway: tuple[str, Gateway]) -> None:
    """The table endpoint lists routes and upstreams with the config version, never secrets."""
    url, served = gateway
    response = httpx.get(f"{url}/-/table")
    assert response.status_code == 200
    table = response.json()
    assert table["version"] == served.table.version
    assert [r["path"] for r in table["routes"]] == [
        "/orders/{order_id}",
        "/files/{rest:path}",
        "/hooks/pay",
    ]
    assert table["upstreams"]["app"]["header_names"] == ["Authorization"]
    assert "very-secret-token" not in response.text


def test_operations_reload_endpoint_is_off_without_admin_token(
    gateway: tuple[str, Gateway],
) -> None:
    """POST /-/reload answers 404 unless an admin token is configured."""
    url, _ = gateway
    assert httpx.post(f"{url}/-/reload").status_code == 404


def test_operations_openapi_lists_every_route_with_parameters_and_body(
    gateway: tuple[str, Gateway],
) -> None:
    """The live OpenAPI document shows each route, its path parameters and body schema."""
    url, _ = gateway
    document = httpx.get(f"{url}/openapi.json").json()
    paths = document["paths"]
    assert set(paths) == {"/orders/{order_id}", "/files/{rest}", "/hooks/pay"} or set(paths) == {
        "/orders/{order_id}",
        "/files/{rest:path}",
        "/hooks/pay",
    }
    get_order = paths["/orders/{order_id}"]["get"]
    assert [p["name"] for p in get_order["parameters"]] == ["order_id"]
    body = paths["/hooks/pay"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == PAY_SCHEMA
    assert httpx.get(f"{url}/docs").status_code == 200


def test_forward_to_httpbin_reports_what_it_received(tmp_path: Path) -> None:
    """httpbin, an upstream nobody here wrote, sees the method, path, query, headers and body."""
    from a2wsgi import WSGIMiddleware
    from httpbin import app as httpbin_wsgi_app

    httpbin_app = WSGIMiddleware(httpbin_wsgi_app)

    config = """
version: 1
upstreams:
  bin: {url: "URL"}
routes:
  - path: /bin/{rest:path}
    methods: [GET, POST, PUT, PATCH, DELETE]
    forward: {upstream: bin, path: "/{{ path.rest }}", headers: {X-Route: "bin"}}
"""
    with serve_app(httpbin_app) as bin_url:
        with running_gateway(config.replace("URL", bin_url), tmp_path) as (url, _):
            response = httpx.put(
                f"{url}/bin/anything/a/b?x=1&x=2&q=a%2Bb&show_env=1",
                content=b'{"k": "v"}',
                headers={"Content-Type": "application/json", "X-Custom": "kept"},
            )
    assert response.status_code == 200
    seen = response.json()
    assert seen["method"] == "PUT"
    assert seen["url"].endswith("/anything/a/b?x=1&x=2&q=a%2Bb&show_env=1")
    assert seen["args"] == {"x": ["1", "2"], "q": "a+b", "show_env": "1"}
    assert seen["data"] == '{"k": "v"}'
    assert seen["json"] == {"k": "v"}
    assert seen["headers"]["X-Custom"] == "kept"
    assert seen["headers"]["X-Route"] == "bin"
    assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen["headers"]["Content-Length"] == "10"


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        sample, value = line.rsplit(" ", 1)
        if "{" in sample:
            metric, _, rest = sample.partition("{")
            found = ",".join(sorted(rest.rstrip("}").split(",")))
        else:
            metric, found = sample, ""
        if metric == name and found == wanted:
            return float(value)
    return 0.0


def test_operations_metrics_count_requests_attempts_and_throttling(
    upstream_url: str, tmp_path: Path
) -> None:
    """/metrics counts requests by route, method and status, upstream attempts, throttling."""
    config = f"""
version: 1
throttles:
  metered: {{rate: 1/min, burst: 1}}
upstreams:
  metered_app: {{url: "{upstream_url}"}}
routes:
  - path: /metered/{{n}}
    methods: [GET]
    tag: metered
    forward: {{upstream: metered_app, path: "/status/{{{{ path.n }}}}"}}
"""
    with running_gateway(config, tmp_path) as (url, served):
        before = httpx.get(f"{url}/metrics").text
        assert httpx.get(f"{url}/metered/200").status_code == 200
        assert httpx.get(f"{url}/metered/200").status_code == 429
        after = httpx.get(f"{url}/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    route = {"route": "/metered/{n}", "method": "GET"}
    for status in ("200", "429"):
        delta = metric_value(text, "bizproxy_requests_total", **route, status=status) - (
            metric_value(before, "bizproxy_requests_total", **route, status=status)
        )
        assert delta == 1
    attempts = metric_value(text, "bizproxy_upstream_attempts_total", upstream="metered_app")
    assert attempts == 1
    assert metric_value(text, "bizproxy_throttled_total", tag="metered") >= 1
    assert metric_value(text, "bizproxy_config_info", version=served.table.version[:12]) == 1
    assert metric_value(text, "bizproxy_request_duration_seconds_count", route="/metered/{n}") >= 2


async def test_operations_access_log_has_one_line_per_request_without_query(
    upstream_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The access log says route, upstream, status, duration and request id; no query."""
    import logging

    from tests.support.gateway import gateway_in_this_loop

    (tmp_path / "pay.schema.json").write_text(json.dumps(PAY_SCHEMA))
    caplog.set_level(logging.INFO, logger="bizproxy.access")
    config = CONFIG.format(upstream=upstream_url)
    async with gateway_in_this_loop(config, tmp_path, APP_TOKEN="t") as (url, _):
        async with httpx.AsyncClient() as client:
            await client.get(f"{url}/orders/7?secret=hunter2", headers={"X-Request-ID": "r-1"})
    [record] = [r for r in caplog.records if r.name == "bizproxy.access"]
    assert record.fields == {  # type: ignore[attr-defined]
        "route": "/orders/{order_id}",
        "method": "GET",
        "upstream": "app",
        "status": 200,
        "duration_ms": record.fields["duration_ms"],  # type: ignore[attr-defined]
        "request_id": "r-1",
    }
    assert "hunter2" not in record.getMessage()
    assert record.getMessage().startswith("GET /orders/{order_id} -> app 200 ")


def test_operations_openapi_gives_each_operation_its_own_id(gateway: tuple[str, Gateway]) -> None:
    """Every operation in the OpenAPI document has a unique operationId."""
    url, _ = gateway
    document = httpx.get(f"{url}/openapi.json").json()
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_operations_unknown_operational_path_answers_in_bizproxy_format(
    gateway: tuple[str, Gateway],
) -> None:
    """An unknown /-/ path or method answers bizproxy's JSON error body."""
    url, _ = gateway
    missing = httpx.get(f"{url}/-/nothing")
    wrong = httpx.get(f"{url}/-/reload")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "NoRoute"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["type"] == "MethodNotAllowed"
