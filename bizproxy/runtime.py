"""Putting the parts together: a gateway built from a file, and serving it with uvicorn.

Business code in the same process uses `load_gateway` to reach its upstreams' proxies:

    gateway = load_gateway("routes.yaml")
    async with gateway:
        await gateway.proxy("orders").send({"order": 1}, tag="checkout")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Mapping
from typing import Any

import uvicorn

from bizproxy.config import LoadedConfig, load_config
from bizproxy.config.models import RedisStoreConfig, RoutesConfig
from bizproxy.gateway import Gateway, WatchSettings
from bizproxy.logs import configure_logging
from bizproxy.policies.throttle_store import MemoryThrottleStore, ThrottleStore
from bizproxy.reload import Reloader
from bizproxy.table import compile_table
from bizproxy.units import plural

logger = logging.getLogger("bizproxy")


def build_store(config: RoutesConfig) -> ThrottleStore:
    store = config.throttle_store
    if isinstance(store, RedisStoreConfig):
        # Imported only when used: the Redis client costs about 18 MiB of memory.
        from bizproxy.policies.redis_store import RedisThrottleStore

        return RedisThrottleStore(
            store.redis.get_secret_value()
            if hasattr(store.redis, "get_secret_value")
            else str(store.redis),
            on_failure=store.on_failure,
            key_prefix=store.key_prefix,
        )
    return MemoryThrottleStore()


def load_gateway(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Gateway:
    """Load, validate and compile a config into a gateway; raises ConfigError when invalid."""
    return gateway_from_loaded(path, load_config(path, environ=environ), environ=environ)


def gateway_from_loaded(
    path: str | os.PathLike[str],
    loaded: LoadedConfig,
    *,
    environ: Mapping[str, str] | None = None,
) -> Gateway:
    """A gateway for an already loaded config, with a reloader for the same file."""
    store = build_store(loaded.model)
    reloader = Reloader(path, loaded, store, environ=environ)
    gateway = Gateway(compile_table(loaded, store=store), reload=reloader.reload_now)
    reloader.gateway = gateway
    gateway.reloader = reloader
    return gateway


UVICORN_OPTIONS: dict[str, Any] = {
    "http": "httptools",
    "loop": "uvloop",
    "lifespan": "on",
    "access_log": False,
    "log_config": None,
    "server_header": False,
    # Answers pass through with the upstream's own Date; uvicorn must not add another.
    "date_header": False,
    # bizproxy decides itself whom to believe about X-Forwarded-For (trusted_proxies).
    "proxy_headers": False,
}


def uvicorn_config(gateway: Gateway, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    drain = int(gateway.table.server.drain_timeout_seconds) or None
    return uvicorn.Config(
        gateway,
        host=host,
        port=port,
        timeout_graceful_shutdown=drain,
        **UVICORN_OPTIONS,
        **options,
    )


async def serve(
    gateway: Gateway,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    watch: bool = True,
    force_polling: bool = False,
    stop: asyncio.Event | None = None,
    **uvicorn_options: Any,
) -> None:
    """Serve until SIGTERM, SIGINT or `stop` is set; reload on file changes (when `watch`)
    and on SIGHUP. Shutting down finishes in-flight requests up to the drain timeout."""
    server = uvicorn.Server(uvicorn_config(gateway, host=host, port=port, **uvicorn_options))
    table = gateway.table
    logger.info(
        "serving %s to %s on http://%s:%d (config %s)",
        plural(len(table.routes), "route"),
        plural(len(table.proxies), "upstream"),
        host,
        port,
        table.version[:12],
    )
    reloader = gateway.reloader
    if watch:
        gateway.watch = WatchSettings(force_polling=force_polling)
    tasks: set[asyncio.Task[Any]] = set()
    loop = asyncio.get_running_loop()

    def start(coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if stop is not None:

        async def exit_when_stopped(event: asyncio.Event) -> None:
            await event.wait()
            server.should_exit = True

        start(exit_when_stopped(stop))
    if reloader is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: start(reloader.reload_now("SIGHUP")))
    try:
        await server.serve()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGHUP)
        pending = list(tasks)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task


WORKER_CONFIG_ENV = "BIZPROXY_WORKER_CONFIG"
WORKER_WATCH_ENV = "BIZPROXY_WORKER_WATCH"
WORKER_LOGGING_ENV = "BIZPROXY_WORKER_LOGGING"


def worker_gateway() -> Gateway:
    """The app of one worker process under `serve --workers N` (a uvicorn factory)."""
    level, log_format, access = os.environ.get(WORKER_LOGGING_ENV, "info:text:").split(":")
    configure_logging(level, log_format, access_log=bool(access))
    gateway = load_gateway(os.environ[WORKER_CONFIG_ENV])
    watch = os.environ.get(WORKER_WATCH_ENV, "")
    if watch:
        gateway.watch = WatchSettings(force_polling=watch == "poll")
    return gateway


def serve_workers(
    path: str,
    *,
    host: str,
    port: int,
    workers: int,
    watch: bool,
    force_polling: bool,
    logging_options: tuple[str, str, bool] = ("info", "text", False),
) -> None:
    """Serve with `workers` processes: each loads, watches and reloads the config itself.

    SIGHUP to the main process restarts the workers, which load the config afresh.
    Metrics of every worker are added up (PROMETHEUS_MULTIPROC_DIR).
    """
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bizproxy-metrics-")
    os.environ[WORKER_CONFIG_ENV] = os.path.abspath(path)
    os.environ[WORKER_WATCH_ENV] = ("poll" if force_polling else "events") if watch else ""
    level, log_format, access = logging_options
    os.environ[WORKER_LOGGING_ENV] = f"{level}:{log_format}:{'on' if access else ''}"
    drain = load_config(path).model.server.drain_timeout
    uvicorn.run(
        "bizproxy.runtime:worker_gateway",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=int(drain) or None,
        **UVICORN_OPTIONS,
    )
