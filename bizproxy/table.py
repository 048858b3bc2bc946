"""The route table: everything a request needs, compiled once and never changed after.

A reload builds a whole new table off to the side; the gateway then swaps one reference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import jsonschema

from bizproxy.config import LoadedConfig
from bizproxy.config.models import (
    PluginBudgetConfig,
    RateBudgetConfig,
    RetryPolicyConfig,
    RouteConfig,
    RoutesConfig,
    StandardWebhooksVerifyConfig,
    UpstreamConfig,
)
from bizproxy.health import HealthCheck
from bizproxy.inbound import parse_networks
from bizproxy.policies.breaker import CircuitBreaker
from bizproxy.policies.retry import Backoff, PluginRetryPolicy, RetryDecider, RetryPolicy
from bizproxy.policies.throttle import Budget, BudgetThrottle, PluginThrottle, Throttle
from bizproxy.policies.throttle_store import ThrottleStore
from bizproxy.proxy import HTTPXFastAPIProxy, PoolLimits, Signer, Timeouts
from bizproxy.router import Router
from bizproxy.signing import DeliveredIds, Verifier, build_verifier, sign_standard_webhooks
from bizproxy.targets import OutlierPolicy, Target, TargetSet, display_url, new_target
from bizproxy.templates import (
    Renderable,
    compile_json_template,
    compile_path_template,
    compile_template,
    referenced_names,
)

RETRY_BODY_LIMIT = 64 * 1024
"""Request bodies up to this size are held so that they can be retried; larger ones stream."""

DELIVERED_IDS_KEPT = 100_000
"""How many delivered message ids a verified deliver route remembers to drop replays."""


@dataclass(frozen=True)
class ForwardTarget:
    """Where and how a forward route sends its request."""

    upstream: str
    path_template: Renderable | None
    query_templates: tuple[tuple[str, jinja2.Template], ...] = ()
    header_templates: tuple[tuple[str, jinja2.Template], ...] = ()
    body_template: Renderable | None = None
    timeout_seconds: float | None = None
    retry_policy: RetryDecider | None = None


@dataclass(frozen=True)
class DeliverTarget:
    """Which proxy's receive() stream a deliver route feeds."""

    upstream: str


@dataclass(frozen=True, eq=False)
class CompiledRoute:
    """One declared route, ready to serve."""

    index: int
    path: str
    methods: frozenset[str]
    tag: str | None
    target: ForwardTarget | DeliverTarget
    path_parameters: Mapping[str, bool]
    """Parameter name -> True when it takes the rest of the path."""
    verifier: Verifier | None = None
    delivered_ids: DeliveredIds | None = None
    body_schema: Mapping[str, Any] | None = None
    body_validator: Any = None
    needs_body: bool = False
    """True when templates, verification or schema read the body, so it is read whole."""
    throttle_per: str | None = None
    """How the tag's budget tells clients apart: None, 'client' or 'header:NAME'."""

    @property
    def kind(self) -> Literal["forward", "deliver"]:
        return "forward" if isinstance(self.target, ForwardTarget) else "deliver"


@dataclass(frozen=True)
class ServerSettings:
    max_body_bytes: int = 1024 * 1024
    drain_timeout_seconds: float = 30.0
    trusted_proxies: tuple[Any, ...] = ()
    admin_token: str | None = None


class TableUsage:
    """Counts the requests running on one table, so a retired table closes when idle."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout_seconds: float) -> bool:
        """Wait until no request runs on the table; False if the timeout came first."""
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True, eq=False)
class RouteTable:
    """An immutable table; its proxies may be shared with the table it replaced."""

    version: str
    routes: tuple[CompiledRoute, ...]
    router: Router[CompiledRoute]
    proxies: Mapping[str, HTTPXFastAPIProxy]
    throttle: BudgetThrottle
    server: ServerSettings = field(default_factory=ServerSettings)
    description: Mapping[str, Any] = field(default_factory=dict)
    """What the operational table endpoint shows: no secrets."""
    upstream_settings: Mapping[str, Any] = field(default_factory=dict)
    """Per upstream, what its proxy was built from (see `upstream_fingerprint`)."""
    usage: TableUsage = field(default_factory=TableUsage)


# -- compiling a validated config into a table ------------------------------------------


def compile_table(
    loaded: LoadedConfig,
    *,
    store: ThrottleStore,
    previous: RouteTable | None = None,
) -> RouteTable:
    """Build a complete table from a validated config, reusing unchanged upstream proxies.

    Nothing here reads files again or fails on operator input: `load_config` already
    checked every reference, template, schema and plug-in.
    """
    config = loaded.model
    plugins = loaded.plugins
    policies = {
        name: build_retry_policy(policy, plugins) for name, policy in config.retry_policies.items()
    }
    throttle = build_throttle(config, store, plugins)
    proxies = build_proxies(config, policies, throttle, previous)

    routes = tuple(
        compile_route(index, route, policies, loaded.schemas, budget_split(config, route.tag))
        for index, route in enumerate(config.routes)
    )
    router: Router[CompiledRoute] = Router()
    for route in routes:
        router.add(route.path, route.methods, route)

    server = config.server
    settings = ServerSettings(
        max_body_bytes=server.max_body,
        drain_timeout_seconds=server.drain_timeout,
        trusted_proxies=parse_networks(str(network) for network in server.trusted_proxies),
        admin_token=server.admin_token.get_secret_value() if server.admin_token else None,
    )
    return RouteTable(
        version=loaded.content_hash,
        routes=routes,
        router=router,
        proxies=proxies,
        throttle=throttle,
        server=settings,
        description=describe_table(config, routes),
        upstream_settings={name: upstream_fingerprint(config, name) for name in config.upstreams},
    )


def upstream_fingerprint(config: RoutesConfig, name: str) -> Any:
    """What a proxy is built from: when this is equal, the proxy is kept across reloads."""
    upstream = config.upstreams[name]
    policy = config.retry_policies.get(upstream.retry) if upstream.retry else None
    return (upstream, policy)


def build_retry_policy(
    policy: RetryPolicyConfig, plugins: Mapping[str, Callable[..., Any]]
) -> RetryDecider:
    backoff = Backoff(
        initial_seconds=policy.backoff.initial,
        max_seconds=policy.backoff.max,
        multiplier=policy.backoff.multiplier,
        jitter=policy.backoff.jitter,
    )
    bounds: dict[str, Any] = {
        "attempts": policy.attempts,
        "backoff": backoff,
        "methods": frozenset(policy.methods),
        "per_try_timeout_seconds": policy.per_try_timeout,
        "deadline_seconds": policy.deadline,
        "respect_retry_after": policy.respect_retry_after,
        "budget_ratio": policy.budget,
        "retry_non_idempotent": policy.retry_non_idempotent,
    }
    if policy.plugin is not None:
        return PluginRetryPolicy(decide=plugins[policy.plugin], **bounds)
    return RetryPolicy(retry_on=tuple(policy.retry_on), **bounds)


def build_throttle(
    config: RoutesConfig, store: ThrottleStore, plugins: Mapping[str, Callable[..., Any]]
) -> BudgetThrottle:
    budgets: dict[str, Budget] = {}
    plugin_throttles: dict[str, Throttle] = {}
    for tag, budget in config.throttles.items():
        if isinstance(budget, PluginBudgetConfig):
            plugin_throttles[tag] = PluginThrottle(plugins[budget.plugin])
            continue
        budgets[tag] = Budget(
            tag=tag,
            rate_per_second=budget.rate.per_second,
            burst=budget.capacity,
            on_exceed=budget.on_exceed,
            max_wait_seconds=budget.max_wait,
            per=budget.per,
        )
    return BudgetThrottle(budgets, store, plugin_throttles)


def budget_split(config: RoutesConfig, tag: str | None) -> str | None:
    """The `per` of the tag's rate budget: how it splits among clients, if at all."""
    budget = config.throttles.get(tag) if tag is not None else None
    return budget.per if isinstance(budget, RateBudgetConfig) else None


def build_proxies(
    config: RoutesConfig,
    policies: Mapping[str, RetryDecider],
    throttle: BudgetThrottle,
    previous: RouteTable | None,
) -> dict[str, HTTPXFastAPIProxy]:
    proxies: dict[str, HTTPXFastAPIProxy] = {}
    for name, upstream in config.upstreams.items():
        kept = previous.proxies.get(name) if previous is not None else None
        unchanged = previous is not None and (
            previous.upstream_settings.get(name) == upstream_fingerprint(config, name)
        )
        if kept is not None and unchanged:
            proxies[name] = kept
            continue
        proxies[name] = build_proxy(name, upstream, policies, throttle, previous=kept)
    return proxies


def build_proxy(
    name: str,
    upstream: UpstreamConfig,
    policies: Mapping[str, RetryDecider],
    throttle: BudgetThrottle,
    *,
    previous: HTTPXFastAPIProxy | None = None,
) -> HTTPXFastAPIProxy:
    timeout = upstream.timeout
    signer = None
    if upstream.sign is not None:
        signer = standard_webhooks_signer(upstream.sign.secret.get_secret_value())
    targets = build_targets(name, upstream, previous)
    proxy = HTTPXFastAPIProxy(
        targets.targets[0].url,
        policies[upstream.retry] if upstream.retry else None,
        throttle,
        name=name,
        timeouts=Timeouts(timeout.connect, timeout.read, timeout.write, timeout.pool),
        pool=PoolLimits(
            upstream.pool.max_connections,
            upstream.pool.max_keepalive,
            upstream.pool.keepalive_expiry,
        ),
        headers=dict(upstream.headers),
        send_method=upstream.send.method,
        send_path=upstream.send.path,
        signer=signer,
        inbox_max_messages=upstream.inbox.max_messages,
        breaker=targets.entries[0].breaker if len(targets.entries) == 1 else None,
        targets=targets,
        health=build_health_check(upstream),
    )
    if previous is not None:
        proxy.take_inbox_of(previous)
    return proxy


def build_targets(
    name: str, upstream: UpstreamConfig, previous: HTTPXFastAPIProxy | None
) -> TargetSet:
    """The upstream's targets; those the previous proxy had, with the same pool, are adopted.

    An adopted target keeps its connection pool and its health: the old proxy, still
    draining, and the new one share it until the old one disconnects.
    """
    pool = PoolLimits(
        upstream.pool.max_connections, upstream.pool.max_keepalive, upstream.pool.keepalive_expiry
    )
    adoptable = previous is not None and previous.pool == pool
    entries: list[tuple[Target, int, CircuitBreaker | None]] = []
    for target_config in upstream.target_list:
        url = str(target_config.url)
        target = previous.targets.by_url(url) if previous is not None and adoptable else None
        if target is None:
            target = new_target(
                url,
                max_connections=pool.max_connections,
                max_keepalive=pool.max_keepalive,
                keepalive_expiry_seconds=pool.keepalive_expiry_seconds,
            )
        breaker = None
        if upstream.breaker is not None:
            breaker = CircuitBreaker(
                upstream.breaker.failures, upstream.breaker.cooldown, upstream=name
            )
        entries.append((target, target_config.weight, breaker))
    outlier = upstream.outlier_policy
    policy = None
    if outlier is not None:
        policy = OutlierPolicy(
            outlier.failures, outlier.cooldown, outlier.max_cooldown, outlier.max_ejected
        )
    return TargetSet.of(name, entries, balance=upstream.balance, outlier=policy)


def build_health_check(upstream: UpstreamConfig) -> HealthCheck | None:
    health = upstream.health
    if health is None:
        return None
    return HealthCheck(
        health.path, health.interval, health.timeout, health.healthy, health.unhealthy
    )


def standard_webhooks_signer(secret: str) -> Signer:
    def sign(message_id: str, body: bytes) -> Mapping[str, str]:
        return sign_standard_webhooks(secret, message_id, int(time.time()), body)

    return sign


def compile_route(
    index: int,
    route: RouteConfig,
    policies: Mapping[str, RetryDecider],
    schemas: Mapping[Path, Any],
    throttle_per: str | None = None,
) -> CompiledRoute:
    target: ForwardTarget | DeliverTarget
    sources: list[str] = []
    if route.forward is not None:
        forward = route.forward
        sources = [forward.path or "", *forward.query.values(), *forward.headers.values()]
        sources.append(forward.body or "")
        target = ForwardTarget(
            upstream=forward.upstream,
            path_template=compile_path_template(forward.path) if forward.path else None,
            query_templates=tuple((k, compile_template(v)) for k, v in forward.query.items()),
            header_templates=tuple((k, compile_template(v)) for k, v in forward.headers.items()),
            body_template=compile_json_template(forward.body) if forward.body else None,
            timeout_seconds=forward.timeout,
            retry_policy=policies[forward.retry] if forward.retry else None,
        )
    else:
        assert route.deliver is not None
        target = DeliverTarget(upstream=route.deliver.upstream)

    verifier, delivered_ids = build_verifier_for(route)
    schema, validator = body_schema_validator(route, schemas)
    reads_body = any("body" in referenced_names(source) for source in sources if source)
    return CompiledRoute(
        index=index,
        path=route.path,
        methods=frozenset(route.methods),
        tag=route.tag,
        target=target,
        path_parameters={name: kind == "path" for name, kind in route.path_params.items()},
        verifier=verifier,
        delivered_ids=delivered_ids,
        body_schema=schema,
        body_validator=validator,
        needs_body=reads_body or verifier is not None or validator is not None,
        throttle_per=throttle_per,
    )


def build_verifier_for(route: RouteConfig) -> tuple[Verifier | None, DeliveredIds | None]:
    verify = route.verify
    if verify is None:
        return None, None
    secret = verify.secret.get_secret_value()
    if isinstance(verify, StandardWebhooksVerifyConfig):
        verifier = build_verifier(
            "standard-webhooks", secret=secret, tolerance_seconds=verify.tolerance
        )
        # Twice the tolerance covers every replay that the timestamp check still admits.
        return verifier, DeliveredIds(2 * verify.tolerance, DELIVERED_IDS_KEPT)
    verifier = build_verifier(
        "hmac-sha256",
        secret=secret,
        header=verify.header,
        prefix=verify.prefix,
        encoding=verify.encoding,
    )
    return verifier, None


def body_schema_validator(
    route: RouteConfig, schemas: Mapping[Path, Any]
) -> tuple[dict[str, Any] | None, Any]:
    if route.body_schema is None:
        return None, None
    schema = schemas[Path(route.body_schema)]
    validator_class = jsonschema.validators.validator_for(schema)
    return schema, validator_class(schema)


def route_retry_policy(config: RoutesConfig, route: CompiledRoute) -> str | None:
    """The retry policy a forward route uses: its own, else its upstream's; None to deliver."""
    forward = config.routes[route.index].forward
    if forward is None:
        return None
    return forward.retry or config.upstreams[route.target.upstream].retry


def describe_table(config: RoutesConfig, routes: tuple[CompiledRoute, ...]) -> dict[str, Any]:
    """The table as the operational endpoint shows it: names and settings, no secrets."""
    return {
        "routes": [
            {
                "methods": sorted(route.methods),
                "path": route.path,
                "kind": route.kind,
                "upstream": route.target.upstream,
                "tag": route.tag,
                "retry": route_retry_policy(config, route),
                "verify": route.verifier is not None,
                "body_schema": route.body_schema is not None,
            }
            for route in routes
        ],
        "upstreams": {
            name: {
                "url": str(upstream.url) if upstream.url is not None else None,
                "targets": [
                    {"url": display_url(str(target.url)), "weight": target.weight}
                    for target in upstream.target_list
                ],
                "balance": upstream.balance,
                "outlier": outlier.model_dump() if (outlier := upstream.outlier_policy) else None,
                "health": upstream.health.model_dump() if upstream.health else None,
                "timeout": upstream.timeout.model_dump(),
                "pool": upstream.pool.model_dump(),
                "retry": upstream.retry,
                "header_names": sorted(upstream.headers),
                "signed": upstream.sign is not None,
                "breaker": upstream.breaker.model_dump() if upstream.breaker else None,
            }
            for name, upstream in config.upstreams.items()
        },
        "throttles": {
            tag: (
                {"plugin": budget.plugin}
                if isinstance(budget, PluginBudgetConfig)
                else {"rate": str(budget.rate), "burst": budget.capacity, "per": budget.per}
            )
            for tag, budget in config.throttles.items()
        },
        "retry_policies": sorted(config.retry_policies),
    }
