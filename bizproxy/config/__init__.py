"""routes.yaml: its models, its loader, and the checks `bizproxy check` runs."""

from __future__ import annotations

from bizproxy.config.loader import LoadedConfig, load_config, load_config_text, summary
from bizproxy.config.models import (
    BackoffConfig,
    BreakerConfig,
    DeliverConfig,
    ForwardConfig,
    HmacVerifyConfig,
    InboxConfig,
    PluginBudgetConfig,
    PoolConfig,
    RateBudgetConfig,
    RedisStoreConfig,
    RetryPolicyConfig,
    RouteConfig,
    RoutesConfig,
    SendConfig,
    ServerConfig,
    SignConfig,
    StandardWebhooksVerifyConfig,
    TimeoutsConfig,
    UpstreamConfig,
)

__all__ = [
    "BackoffConfig",
    "BreakerConfig",
    "DeliverConfig",
    "ForwardConfig",
    "HmacVerifyConfig",
    "InboxConfig",
    "LoadedConfig",
    "PluginBudgetConfig",
    "PoolConfig",
    "RateBudgetConfig",
    "RedisStoreConfig",
    "RetryPolicyConfig",
    "RouteConfig",
    "RoutesConfig",
    "SendConfig",
    "ServerConfig",
    "SignConfig",
    "StandardWebhooksVerifyConfig",
    "TimeoutsConfig",
    "UpstreamConfig",
    "load_config",
    "load_config_text",
    "summary",
]
