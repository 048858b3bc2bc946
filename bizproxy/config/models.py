"""The models of routes.yaml: frozen, closed to unknown keys, holding parsed values.

Durations are seconds (float), sizes bytes (int), rates `units.Rate`, percentages
fractions (float), methods upper-case, file paths resolved against the config's folder.
These models check each section on its own; references between sections, templates,
schema files and plug-ins are checked in `bizproxy.config.validate`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    PlainValidator,
    StrictBool,
    StrictInt,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from bizproxy import units
from bizproxy.config.document import describe
from bizproxy.config.paths import route_parameters
from bizproxy.config.types import (
    DEFAULT_RETRY_ON,
    IDEMPOTENT_METHODS,
    ClientKey,
    Duration,
    FilePath,
    Fraction,
    HeaderName,
    HeaderValue,
    HttpUrl,
    Method,
    Name,
    Network,
    PluginPath,
    RateValue,
    RedisUrl,
    RetryCondition,
    Secret,
    Size,
    UpstreamPath,
    WebhookSecret,
    parse_duration_field,
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


def _route_path(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a path that starts with '/', got {describe(value)}")
    route_parameters(value)
    return value


RoutePath = Annotated[
    str,
    PlainValidator(_route_path),
    WithJsonSchema({"type": "string", "pattern": "^/(?!-(/|$))", "examples": ["/api/{id}"]}),
]
"""An inbound path with `{name}` or `{name:type}` parameters, outside the reserved /-/."""


class ServerConfig(_Model):
    """How the gateway itself runs."""

    max_body: Size = Field(1024**2, description="larger inbound bodies get 413")
    drain_timeout: Duration = Field(30.0, description="how long a replaced table may finish")
    trusted_proxies: tuple[Network, ...] = Field(
        (), description="X-Forwarded-For is believed only from these addresses or networks"
    )
    workers: StrictInt = Field(1, ge=1, le=256)
    admin_token: Secret | None = Field(
        None, description="enables POST /-/reload when set and not empty"
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_token_is_none(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("admin_token") == "":
            return {**data, "admin_token": None}
        return data


class RedisStoreConfig(_Model):
    """Throttle budgets shared through Redis by every worker and instance."""

    redis: RedisUrl = Field(repr=False)
    on_failure: Literal["open", "closed"] = Field(
        "open", description="admit (open) or refuse (closed) while Redis is unreachable"
    )
    key_prefix: str = "bizproxy:"


def _store_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "memory store"
    if isinstance(value, dict | RedisStoreConfig):
        return "redis store"
    return None


def _memory(value: object) -> Literal["memory"]:
    if value != "memory":
        raise ValueError(
            "expected memory or a mapping such as {redis: redis://127.0.0.1:6379/0}, "
            f"got {describe(value)}"
        )
    return "memory"


ThrottleStore = Annotated[
    Annotated[
        Literal["memory"],
        PlainValidator(_memory),
        WithJsonSchema({"const": "memory"}),
        Tag("memory store"),
    ]
    | Annotated[RedisStoreConfig, Tag("redis store")],
    Discriminator(
        _store_kind,
        custom_error_type="store_kind",
        custom_error_message="expected memory or a mapping such as {redis: URL}",
    ),
]


class BackoffConfig(_Model):
    """How long to wait between attempts: initial * multiplier**(retry-1), capped, jittered."""

    initial: Duration = 0.1
    max: Duration = 2.0
    multiplier: float = Field(2.0, ge=1, le=10, strict=True)
    jitter: Literal["full", "none", "decorrelated"] = "full"

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> BackoffConfig:
        if self.max < self.initial:
            raise ValueError(
                f"max ({units.format_duration(self.max)}) is below initial "
                f"({units.format_duration(self.initial)})"
            )
        return self


class RetryPolicyConfig(_Model):
    """A bounded retry policy; with `plugin`, a callable decides which failures to retry."""

    attempts: StrictInt = Field(3, ge=1, le=20, description="total tries, the first included")
    backoff: BackoffConfig = BackoffConfig()
    retry_on: tuple[RetryCondition, ...] = DEFAULT_RETRY_ON
    methods: tuple[Method, ...] = IDEMPOTENT_METHODS
    per_try_timeout: Duration | None = None
    deadline: Duration | None = Field(
        None, description="overall limit over every attempt; a smaller route timeout wins"
    )
    respect_retry_after: StrictBool = True
    budget: Fraction | None = Field(0.2, description="retries at most this share of requests")
    retry_non_idempotent: StrictBool = Field(
        False, description="also retry POST and PATCH requests that carry an Idempotency-Key"
    )
    plugin: PluginPath | None = Field(
        None, description="a callable (exception, attempt) -> bool deciding each retry"
    )

    @model_validator(mode="after")
    def _plugin_or_retry_on(self) -> RetryPolicyConfig:
        if self.plugin is not None and "retry_on" in self.model_fields_set:
            raise ValueError("give either retry_on or plugin, not both: the plug-in decides")
        return self


class RateBudgetConfig(_Model):
    """A token bucket: `rate` refills it, `burst` is its size."""

    rate: RateValue
    burst: StrictInt | None = Field(None, ge=1, description="default: the rate's count")
    on_exceed: Literal["reject", "wait"] = "reject"
    max_wait: Duration = Field(5.0, description="the longest on_exceed: wait waits")
    per: ClientKey | None = Field(None, description="one bucket per client instead of one")

    @property
    def capacity(self) -> int:
        """The bucket size: `burst`, else the rate's count rounded up."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate.count))


class PluginBudgetConfig(_Model):
    """A callable (tag) -> bool that admits or refuses each request."""

    plugin: PluginPath


def _budget_kind(value: Any) -> str | None:
    if isinstance(value, PluginBudgetConfig) or (isinstance(value, dict) and "plugin" in value):
        return "plug-in budget"
    if isinstance(value, dict | RateBudgetConfig):
        return "rate budget"
    return None


ThrottleBudget = Annotated[
    Annotated[RateBudgetConfig, Tag("rate budget")]
    | Annotated[PluginBudgetConfig, Tag("plug-in budget")],
    Discriminator(
        _budget_kind,
        custom_error_type="budget_kind",
        custom_error_message="expected a mapping such as {rate: 20/s} or {plugin: module:name}",
    ),
]


class TimeoutsConfig(_Model):
    """Per-phase timeouts; a single duration sets all four."""

    connect: Duration = 5.0
    read: Duration = 30.0
    write: Duration = 30.0
    pool: Duration = 5.0


def _spread_timeout(value: Any) -> Any:
    if isinstance(value, dict | TimeoutsConfig):
        return value
    try:
        seconds = parse_duration_field(value)
    except ValueError:
        raise ValueError(
            "expected a duration such as 10s or a mapping of connect, read, write and pool, "
            f"got {describe(value)}"
        ) from None
    return {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}


class _OrDuration:
    """JSON Schema: the mapping, or one duration for every phase."""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "string", "pattern": units.DURATION_PATTERN},
                {"type": "number", "minimum": 0},
                handler(schema),
            ]
        }


Timeouts = Annotated[TimeoutsConfig, BeforeValidator(_spread_timeout), _OrDuration()]


class PoolConfig(_Model):
    """Connection pool bounds of one upstream."""

    max_connections: StrictInt = Field(100, ge=1)
    # Idle connections kept; unset keeps up to max_connections. A lower bound closes
    # connections a busy upstream needs again a moment later (each then costs a new
    # handshake and leaves a socket in TIME_WAIT); keepalive_expiry retires idle ones.
    max_keepalive: StrictInt | None = Field(None, ge=0)
    keepalive_expiry: Duration = 5.0

    @model_validator(mode="after")
    def _keepalive_within_connections(self) -> PoolConfig:
        if self.max_keepalive is not None and self.max_keepalive > self.max_connections:
            raise ValueError(
                f"max_keepalive ({self.max_keepalive}) exceeds max_connections "
                f"({self.max_connections})"
            )
        return self


class SendConfig(_Model):
    """Where `send()` posts messages."""

    method: Method = "POST"
    path: UpstreamPath = "/send"


def _decode_webhook_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


class SignConfig(_Model):
    """Standard-webhooks signatures on outbound bodies."""

    scheme: Literal["standard-webhooks"] = "standard-webhooks"
    secret: WebhookSecret

    def key(self) -> bytes:
        """The signing key: the secret's base64 text decoded."""
        return _decode_webhook_key(self.secret.get_secret_value())


class InboxConfig(_Model):
    """The bound of the upstream proxy's receive() inbox."""

    max_messages: StrictInt = Field(1000, ge=1)


class BreakerConfig(_Model):
    """Open after `failures` failures in a row; try again after `cooldown`."""

    failures: StrictInt = Field(5, ge=1)
    cooldown: Duration = 30.0


class TargetConfig(_Model):
    """One server of an upstream; `weight` is its share of requests relative to the others."""

    url: HttpUrl
    weight: StrictInt = Field(1, ge=1, le=1000)


def _target_entry(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


class _OrUrl:
    """JSON Schema: the mapping, or the URL alone."""

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        url = handler.resolve_ref_schema(handler(schema))["properties"]["url"]
        return {"anyOf": [url, handler(schema)]}


Target = Annotated[TargetConfig, BeforeValidator(_target_entry), _OrUrl()]


class OutlierConfig(_Model):
    """Passive health: eject a target after `failures` failures in a row, for a cooldown."""

    failures: StrictInt = Field(5, ge=1, description="connect errors, timeouts or 5xx in a row")
    cooldown: Duration = Field(10.0, description="the first ejection's length; doubles after")
    max_cooldown: Duration = Field(300.0, description="the longest an ejection lasts")
    max_ejected: Fraction = Field(0.5, description="at most this share of targets is ejected")

    @model_validator(mode="after")
    def _max_not_below_cooldown(self) -> OutlierConfig:
        if self.max_cooldown < self.cooldown:
            raise ValueError(
                f"max_cooldown ({units.format_duration(self.max_cooldown)}) is below cooldown "
                f"({units.format_duration(self.cooldown)})"
            )
        return self


class HealthConfig(_Model):
    """Active health: GET `path` on each target every `interval`; 2xx within `timeout` passes."""

    path: UpstreamPath = "/healthz"
    interval: Duration = 5.0
    timeout: Duration = 1.0
    healthy: StrictInt = Field(2, ge=1, description="passes in a row that bring a target back")
    unhealthy: StrictInt = Field(3, ge=1, description="failures in a row that take it out")


class UpstreamConfig(_Model):
    """One upstream service and how to talk to it."""

    url: HttpUrl | None = Field(None, description="the one server; or give targets")
    targets: tuple[Target, ...] | None = Field(
        None, min_length=1, description="several servers, each a URL or {url, weight}"
    )
    balance: Literal["round-robin", "least-requests", "random"] = "round-robin"
    outlier: OutlierConfig | None = Field(
        None, description="passive health; on by default with targets"
    )
    health: HealthConfig | None = Field(None, description="active health checks")
    timeout: Timeouts = TimeoutsConfig()
    pool: PoolConfig = PoolConfig()
    retry: Name | None = Field(None, description="a name from retry_policies")
    headers: Mapping[HeaderName, HeaderValue] = Field({}, repr=False)
    send: SendConfig = SendConfig()
    sign: SignConfig | None = None
    inbox: InboxConfig = InboxConfig()
    breaker: BreakerConfig | None = Field(None, description="one per target")

    @model_validator(mode="after")
    def _url_or_targets(self) -> UpstreamConfig:
        if (self.url is None) == (self.targets is None):
            got = "neither" if self.url is None else "both"
            raise ValueError(f"an upstream needs exactly one of url and targets, got {got}")
        return self

    @property
    def target_list(self) -> tuple[TargetConfig, ...]:
        """The servers: `targets`, or `url` as the only one."""
        if self.targets is not None:
            return self.targets
        return (TargetConfig(url=str(self.url)),)

    @property
    def outlier_policy(self) -> OutlierConfig | None:
        """The passive health settings in force: the default ones for several targets."""
        if self.outlier is None and self.targets is not None:
            return OutlierConfig()
        return self.outlier


class StandardWebhooksVerifyConfig(_Model):
    """Check inbound standard-webhooks signatures (webhook-id, -timestamp, -signature)."""

    scheme: Literal["standard-webhooks"]
    secret: WebhookSecret
    tolerance: Duration = Field(300.0, description="how old or new a timestamp may be")

    def key(self) -> bytes:
        """The verification key: the secret's base64 text decoded."""
        return _decode_webhook_key(self.secret.get_secret_value())


class HmacVerifyConfig(_Model):
    """Check an HMAC-SHA256 of the raw body sent in one header."""

    scheme: Literal["hmac-sha256"]
    secret: Secret
    header: HeaderName = "X-Signature-256"
    prefix: str = Field("", description="text before the digest, such as sha256=")
    encoding: Literal["hex", "base64"] = "hex"


Verify = Annotated[StandardWebhooksVerifyConfig | HmacVerifyConfig, Field(discriminator="scheme")]


class ForwardConfig(_Model):
    """Send the request on to an upstream; templates see path, query, headers, body, method, tag."""

    upstream: Name
    path: str | None = Field(None, description="a template; default: the inbound path")
    query: Mapping[str, str] = Field({}, description="templated query parameters to add")
    headers: Mapping[HeaderName, HeaderValue] = Field({}, repr=False)
    body: str | None = Field(None, description="a templated JSON body replacing the inbound one")
    timeout: Duration | None = Field(
        None, description="the overall limit for this route, every retry included"
    )
    retry: Name | None = Field(None, description="overrides the upstream's retry policy")


class DeliverConfig(_Model):
    """Put the request body into an upstream proxy's receive() inbox and answer 202."""

    upstream: Name


_BODY_METHODS = ("POST", "PUT", "PATCH")


class RouteConfig(_Model):
    """One inbound path and methods, and where requests to it go."""

    path: RoutePath
    methods: tuple[Method, ...] = Field(("GET",), min_length=1)
    tag: Name | None = Field(None, description="the throttle budget this route draws on")
    forward: ForwardConfig | None = None
    deliver: DeliverConfig | None = None
    verify: Verify | None = None
    body_schema: FilePath | None = Field(None, description="a JSON Schema file for the body")

    @property
    def path_params(self) -> dict[str, str]:
        """The path's parameters as {name: type}."""
        return route_parameters(self.path)

    @model_validator(mode="after")
    def _one_destination(self) -> RouteConfig:
        message = destination_problem(self.forward is not None, self.deliver is not None)
        if message is None and self.deliver is not None:
            message = deliver_methods_problem(self.methods)
        if message is not None:
            raise PydanticCustomError("route_destination", message)
        return self


def destination_problem(has_forward: bool, has_deliver: bool) -> str | None:
    """Why a route's forward/deliver pair is wrong, or None when it has exactly one."""
    if has_forward != has_deliver:
        return None
    got = "both" if has_forward else "neither"
    return f"a route needs exactly one of forward and deliver, got {got}"


def deliver_methods_problem(methods: tuple[str, ...]) -> str | None:
    """Why a deliver route's methods are wrong: messages arrive as bodies."""
    others = [method for method in methods if method not in _BODY_METHODS]
    if not others:
        return None
    return (
        "a deliver route takes message bodies, so its methods must be POST, PUT or PATCH, "
        f"got {', '.join(others)}"
    )


class RoutesConfig(_Model):
    """The whole of routes.yaml."""

    model_config = ConfigDict(title="bizproxy routes.yaml")

    version: Literal[1]
    server: ServerConfig = ServerConfig()
    throttle_store: ThrottleStore = "memory"
    retry_policies: Mapping[Name, RetryPolicyConfig] = {}
    throttles: Mapping[Name, ThrottleBudget] = {}
    upstreams: Mapping[Name, UpstreamConfig] = {}
    routes: tuple[RouteConfig, ...] = ()
