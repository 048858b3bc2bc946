"""Prometheus metrics: what the gateway served, what upstreams cost, what policies decided.

With several workers, `serve --workers` points PROMETHEUS_MULTIPROC_DIR at a shared
folder before the workers start, and `/metrics` then adds up every worker's values.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

REQUESTS = Counter(
    "bizproxy_requests_total",
    "Requests answered, by route, method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "bizproxy_request_duration_seconds",
    "Time from the request's start to the end of its answer, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_ATTEMPTS = Counter(
    "bizproxy_upstream_attempts_total",
    "Attempts sent to an upstream, first tries and retries alike.",
    ["upstream"],
)
UPSTREAM_RETRIES = Counter(
    "bizproxy_upstream_retries_total", "Retries sent to an upstream.", ["upstream"]
)
UPSTREAM_ERRORS = Counter(
    "bizproxy_upstream_errors_total",
    "Failed attempts, by upstream and kind (connect-error, timeout, reset, status).",
    ["upstream", "kind"],
)
THROTTLED = Counter(
    "bizproxy_throttled_total", "Requests refused for being over a throttle budget.", ["tag"]
)
BREAKER_OPEN = Gauge(
    "bizproxy_breaker_open",
    "1 while the upstream's circuit breaker refuses requests, else 0.",
    ["upstream"],
    multiprocess_mode="max",
)
TARGET_STATE = Gauge(
    "bizproxy_upstream_target_state",
    "1 for the state each target of an upstream is in (healthy, ejected, probing, unhealthy).",
    ["upstream", "target", "state"],
    multiprocess_mode="max",
)
RELOADS = Counter("bizproxy_reloads_total", "Config reloads, by result.", ["result"])
CONFIG_INFO = Gauge(
    "bizproxy_config_info",
    "1 for the config version being served.",
    ["version"],
    multiprocess_mode="max",
)


def record_config_version(version: str, previous: str | None = None) -> None:
    if previous is not None and previous != version:
        CONFIG_INFO.labels(version=previous[:12]).set(0)
    CONFIG_INFO.labels(version=version[:12]).set(1)


class RouteMetrics:
    """The label children of one route, looked up once so the hot path only counts."""

    __slots__ = ("_by_status", "_duration", "_route")

    def __init__(self, route: str) -> None:
        self._route = route
        self._duration = REQUEST_SECONDS.labels(route=route)
        self._by_status: dict[tuple[str, int], Any] = {}

    def observe(self, method: str, status: int, seconds: float) -> None:
        key = (method, status)
        counter = self._by_status.get(key)
        if counter is None:
            counter = REQUESTS.labels(route=self._route, method=method, status=str(status))
            self._by_status[key] = counter
        counter.inc()
        self._duration.observe(seconds)


class UpstreamMetrics:
    """Counters of one upstream, bound once per proxy."""

    __slots__ = ("_attempts", "_errors", "_name", "_retries")

    def __init__(self, name: str) -> None:
        self._name = name
        self._attempts = UPSTREAM_ATTEMPTS.labels(upstream=name)
        self._retries = UPSTREAM_RETRIES.labels(upstream=name)
        self._errors: dict[str, Any] = {}

    def attempt(self, retry: bool) -> None:
        self._attempts.inc()
        if retry:
            self._retries.inc()

    def error(self, kind: str) -> None:
        counter = self._errors.get(kind)
        if counter is None:
            counter = UPSTREAM_ERRORS.labels(upstream=self._name, kind=kind)
            self._errors[kind] = counter
        counter.inc()


THROTTLE_STORE_OUTAGE = Gauge(
    "bizproxy_throttle_store_outage",
    "1 while the shared throttle store is unreachable, else 0.",
    multiprocess_mode="max",
)


def observe_table(table: Any) -> None:
    """Read the states that live in the table's objects into gauges, just before a scrape."""
    for name, proxy in table.proxies.items():
        breaker = getattr(proxy, "breaker", None)
        if breaker is not None:
            BREAKER_OPEN.labels(upstream=name).set(0 if breaker.state == "closed" else 1)
        targets = getattr(proxy, "targets", None)
        for target in targets.targets if targets is not None else ():
            current = target.state
            for state in ("healthy", "ejected", "probing", "unhealthy"):
                labels = TARGET_STATE.labels(upstream=name, target=target.label, state=state)
                labels.set(1 if state == current else 0)
    store = getattr(table.throttle, "store", None)
    outage = getattr(store, "outage", None)
    if outage is not None:
        THROTTLE_STORE_OUTAGE.set(1 if outage else 0)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text and its content type; every worker's values when multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
