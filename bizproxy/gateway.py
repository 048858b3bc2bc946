"""The gateway: the ASGI app that serves the current route table, and swaps it atomically.

A request reads the current table once, at its start, and finishes on it. Matched
routes go straight to `forward` or `deliver` (a trie lookup, no framework routing on
the hot path); everything else (operational endpoints, /docs, /openapi.json) goes to
the table's FastAPI app, where every route is also registered, so the OpenAPI document
shows the table that is serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from bizproxy.deliver import deliver
from bizproxy.forward import forward
from bizproxy.inbound import REQUEST_ID_SCOPE_KEY, InboundRequest, answer_failures, send_error
from bizproxy.metrics import RouteMetrics, observe_table, record_config_version, render_metrics
from bizproxy.proxy import HTTPXFastAPIProxy
from bizproxy.table import CompiledRoute, ForwardTarget, RouteTable

if TYPE_CHECKING:
    from bizproxy.reload import Reloader

logger = logging.getLogger("bizproxy")
access_logger = logging.getLogger("bizproxy.access")

RESERVED_PREFIX = "/-/"
DOCUMENT_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
"""The live OpenAPI document and its viewers, unless a route claims the same path
(as /metrics, which is otherwise the Prometheus endpoint)."""

ReloadCallback = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass
class ReloadStatus:
    """What the operational table endpoint reports about the last reload attempt."""

    attempted_at: float | None = None
    ok: bool | None = None
    errors: list[str] = field(default_factory=list)
    version: str | None = None


@dataclass(frozen=True)
class WatchSettings:
    force_polling: bool = False


class ServedTable:
    """A table with what serving it needs beside it: swapped in as one reference.

    The FastAPI app of the table's routes (for /docs and /openapi.json) and each route's
    metric children are built on first use: a reload of 1,000 routes need not pay for
    them, nor hold them in memory, before anyone asks.
    """

    __slots__ = ("_app", "route_metrics", "table")

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.route_metrics: list[RouteMetrics | None] = [None] * len(table.routes)
        self._app: FastAPI | None = None

    @property
    def app(self) -> FastAPI:
        if self._app is None:
            self._app = build_routes_app(self.table)
        return self._app

    def metrics_for(self, route: CompiledRoute) -> RouteMetrics:
        metrics = self.route_metrics[route.index]
        if metrics is None:
            metrics = self.route_metrics[route.index] = RouteMetrics(route.path)
        return metrics


class Gateway:
    """Serves one route table at a time; `swap` replaces it while requests keep flowing."""

    def __init__(self, table: RouteTable, *, reload: ReloadCallback | None = None) -> None:
        self._served = ServedTable(table)
        self._operations = self._build_operations_app()
        record_config_version(table.version)
        self._reload = reload
        self._retiring: set[asyncio.Task[None]] = set()
        self.reload_status = ReloadStatus(version=table.version)
        self.started = False
        self.reloader: Reloader | None = None
        """Set by `load_gateway` when the table came from a file that can be reloaded."""
        self.watch: WatchSettings | None = None
        """When set, start() also watches the config files and reloads on change."""
        self._watcher: asyncio.Task[None] | None = None
        self._stop_watching = asyncio.Event()
        self._retired_tables: list[RouteTable] = []

    # -- the current table -------------------------------------------------------------

    @property
    def table(self) -> RouteTable:
        return self._served.table

    def proxy(self, name: str) -> HTTPXFastAPIProxy:
        """The current table's proxy for upstream `name`, for business code in this process."""
        try:
            return self._served.table.proxies[name]
        except KeyError:
            known = ", ".join(sorted(self._served.table.proxies)) or "none"
            raise KeyError(f"no upstream named {name!r} (known: {known})") from None

    async def swap(self, table: RouteTable) -> None:
        """Serve `table` from now on; retire the old one once its requests finish."""
        new = ServedTable(table)
        if self.started:
            await _connect_all(table)
        # Proxies kept from the old table take the new budgets, in the same step as the
        # swap (no await in between); the token store, and so spent budgets, carry over.
        for proxy in table.proxies.values():
            proxy.throttle = table.throttle
        old, self._served = self._served, new
        self.reload_status.version = table.version
        record_config_version(table.version, old.table.version)
        self._retired_tables.append(old.table)
        task = asyncio.create_task(self._retire(old.table))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: RouteTable) -> None:
        """Close the old table's proxies that the new one does not share, once idle."""
        drained = await old.usage.wait_idle(old.server.drain_timeout_seconds)
        if not drained:
            logger.warning(
                "old route table %s still had %d requests after the drain timeout of %.0fs; "
                "closing its upstream connections",
                old.version[:12],
                old.usage.in_flight,
                old.server.drain_timeout_seconds,
            )
        # Still in use: the serving table's proxies, and those of tables still draining.
        in_use = [self.table, *(t for t in self._retired_tables if t is not old)]
        kept = {id(proxy) for table in in_use for proxy in table.proxies.values()}
        for proxy in old.proxies.values():
            if id(proxy) not in kept:
                await proxy.disconnect()
        self._retired_tables.remove(old)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect every upstream proxy; then watch the config files, when asked to."""
        await _connect_all(self.table)
        self.started = True
        if self.watch is not None and self.reloader is not None:
            self._stop_watching = asyncio.Event()
            self._watcher = asyncio.create_task(
                self.reloader.watch(self._stop_watching, force_polling=self.watch.force_polling)
            )

    async def stop(self) -> None:
        """Stop watching, stop retiring old tables, close every upstream pool, then the
        throttle store."""
        self.started = False
        if self._watcher is not None:
            self._stop_watching.set()
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        retired = [proxy for table in self._retired_tables for proxy in table.proxies.values()]
        for proxy in {id(p): p for p in [*retired, *self.table.proxies.values()]}.values():
            await proxy.disconnect()
        self._retired_tables.clear()
        await self.table.throttle.store.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        served = self._served
        if scope["type"] != "http":
            await self._operations(scope, receive, send)
            return
        table = served.table
        path: str = scope["path"]
        if path.startswith(RESERVED_PREFIX):
            await self._operations(scope, receive, send)
            return
        raw_path = scope.get("raw_path")
        match = table.router.match(
            scope["method"], raw_path.decode("latin-1") if raw_path else path
        )
        if match is None or match.route is None:
            if path == "/metrics":
                await self._operations(scope, receive, send)
            elif path in DOCUMENT_PATHS:
                await served.app(scope, receive, send)
            else:
                await _no_route(scope, send, match.allowed if match else None)
            return

        route = match.route
        started = time.perf_counter()
        table.usage.enter()
        try:
            status = await serve_route(table, route, match.params, scope, receive, send)
        finally:
            table.usage.leave()
        elapsed = time.perf_counter() - started
        served.metrics_for(route).observe(scope["method"], status, elapsed)
        if access_logger.isEnabledFor(logging.INFO):
            _log_access(route, scope, status, elapsed)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the operational endpoints -----------------------------------------------------

    def _build_operations_app(self) -> FastAPI:
        """Liveness, readiness, the table, metrics, reload: each reads the current table."""
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.exception_handler(StarletteHTTPException)
        async def framework_error(request: Request, error: StarletteHTTPException) -> Response:
            kinds = {404: "NoRoute", 405: "MethodNotAllowed"}
            message = f"no operational endpoint {request.method} {request.url.path}"
            body = {
                "error": {"type": kinds.get(error.status_code, "BadRequest"), "message": message}
            }
            return JSONResponse(body, error.status_code, headers=error.headers)

        @app.get("/-/live", include_in_schema=False)
        async def live() -> dict[str, str]:
            return {"status": "live"}

        @app.get("/-/ready", include_in_schema=False)
        async def ready() -> Response:
            table = self.table
            waiting = sorted(n for n, p in table.proxies.items() if not p.is_connected)
            if waiting:
                return JSONResponse({"status": "not ready", "waiting_for": waiting}, 503)
            return JSONResponse({"status": "ready"})

        @app.get("/-/table", include_in_schema=False)
        async def current_table() -> dict[str, Any]:
            table, status = self.table, self.reload_status
            upstreams = {
                name: {**settings, "targets": table.proxies[name].targets.describe()}
                for name, settings in table.description.get("upstreams", {}).items()
            }
            return {
                **table.description,
                "upstreams": upstreams,
                "version": table.version,
                "in_flight": table.usage.in_flight,
                "last_reload": {
                    "attempted_at": status.attempted_at,
                    "ok": status.ok,
                    "errors": status.errors,
                },
            }

        @app.get("/metrics", include_in_schema=False)
        @app.get("/-/metrics", include_in_schema=False)
        async def metrics() -> Response:
            observe_table(self.table)
            body, content_type = render_metrics()
            return Response(body, media_type=content_type)

        @app.post("/-/reload", include_in_schema=False)
        async def reload(request: Request) -> Response:
            token = self.table.server.admin_token
            if not token or self._reload is None:
                return JSONResponse(
                    {"error": {"type": "NotFound", "message": "reload over HTTP is off"}}, 404
                )
            if request.headers.get("authorization") != f"Bearer {token}":
                return JSONResponse(
                    {"error": {"type": "Unauthorized", "message": "admin token required"}}, 401
                )
            result = await self._reload()
            return JSONResponse(dict(result), 200 if result.get("ok") else 422)

        return app

    def record_reload(self, *, ok: bool, errors: list[str]) -> None:
        self.reload_status.attempted_at = time.time()
        self.reload_status.ok = ok
        self.reload_status.errors = errors


async def serve_route(
    table: RouteTable,
    route: CompiledRoute,
    params: dict[str, str],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> int:
    """Serve one request on a route of `table`; return the status answered."""
    request = InboundRequest(scope)
    target = route.target
    work = (
        forward(table, route, target, request, params, receive, send)
        if isinstance(target, ForwardTarget)
        else deliver(table, route, target, request, receive, send)
    )
    return await answer_failures(
        work,
        send,
        request_id=request.request_id,
        route=route.path,
        upstream=target.upstream,
        budgets=table.throttle.budgets,
    )


def _log_access(route: CompiledRoute, scope: Scope, status: int, elapsed: float) -> None:
    """One line per request: no query string, no headers, no body."""
    request_id = scope.get(REQUEST_ID_SCOPE_KEY, "-")
    fields = {
        "route": route.path,
        "method": scope["method"],
        "upstream": route.target.upstream,
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
        "request_id": request_id,
    }
    access_logger.info(
        "%s %s -> %s %d %.1fms",
        fields["method"],
        route.path,
        fields["upstream"],
        status,
        elapsed * 1000,
        extra={"fields": fields},
    )


def build_routes_app(table: RouteTable) -> FastAPI:
    """A FastAPI app with one endpoint per route: the live OpenAPI document of the table.

    The gateway routes requests itself; should one reach this app, its endpoint hands
    the call to the same forward or deliver handler.
    """
    app = FastAPI(
        title="bizproxy",
        version=table.version[:12],
        description="Routes served from routes.yaml by bizproxy.",
    )
    for route in table.routes:
        # One operation per method: each needs an operationId of its own.
        for method in sorted(route.methods):
            app.add_api_route(
                route.path,
                _framework_endpoint(table, route),
                methods=[method],
                name=f"route {route.index}: {method} {route.path}",
                operation_id=f"route_{route.index}_{method.lower()}",
                summary=_summary(route),
                openapi_extra=_openapi_extra(route),
                include_in_schema=True,
            )
    return app


async def _connect_all(table: RouteTable) -> None:
    await asyncio.gather(*(proxy.connect() for proxy in table.proxies.values()))


async def _no_route(scope: Scope, send: Send, allowed: frozenset[str] | None) -> None:
    request = InboundRequest(scope)
    if allowed:
        allow = ", ".join(sorted(allowed))
        await send_error(
            send,
            405,
            "MethodNotAllowed",
            f"{request.method} is not routed for {scope['path']}; allowed: {allow}",
            request_id=request.request_id,
            headers=[(b"allow", allow.encode())],
        )
        return
    await send_error(
        send,
        404,
        "NoRoute",
        f"no route matches {request.method} {scope['path']}",
        request_id=request.request_id,
    )


class _DelegatingResponse(Response):
    """Hands the raw ASGI call to bizproxy's own handler, for requests routed by FastAPI."""

    def __init__(self, run: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        super().__init__()
        self._run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._run(scope, receive, send)


def _framework_endpoint(table: RouteTable, route: CompiledRoute) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        params = {name: str(value) for name, value in request.path_params.items()}

        async def run(scope: Scope, receive: Receive, send: Send) -> None:
            await serve_route(table, route, params, scope, receive, send)

        return _DelegatingResponse(run)

    return endpoint


def _summary(route: CompiledRoute) -> str:
    target = route.target
    return f"{route.kind} to upstream {target.upstream!r}"


def _openapi_extra(route: CompiledRoute) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.path_parameters
        ],
        "responses": {"202" if route.kind == "deliver" else "200": {"description": "answered"}},
    }
    if route.body_schema is not None:
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": dict(route.body_schema)}},
        }
    if route.tag is not None:
        extra["x-bizproxy-tag"] = route.tag
    return extra
