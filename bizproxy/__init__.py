"""bizproxy: a declarative, config-driven routing proxy.

Business code imports from here alone. The heavier parts (the proxy and its httpx
client, the gateway and FastAPI) load on first use, so `import bizproxy` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bizproxy.errors import (
    BusinessProxyException,
    CircuitOpen,
    ConfigError,
    ConfigProblem,
    ConnectionFailure,
    InboxFull,
    NoHealthyTarget,
    NotConnected,
    RetriesExhausted,
    SignatureFailure,
    Throttled,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)
from bizproxy.interface import BusinessProxyInterface

if TYPE_CHECKING:
    from bizproxy.gateway import Gateway
    from bizproxy.proxy import HTTPXFastAPIProxy
    from bizproxy.runtime import load_gateway, serve

__version__ = "0.1.0"

_LAZY = {
    "Gateway": "bizproxy.gateway",
    "HTTPXFastAPIProxy": "bizproxy.proxy",
    "load_gateway": "bizproxy.runtime",
    "serve": "bizproxy.runtime",
}

__all__ = [
    "BusinessProxyException",
    "BusinessProxyInterface",
    "CircuitOpen",
    "ConfigError",
    "ConfigProblem",
    "ConnectionFailure",
    "Gateway",
    "HTTPXFastAPIProxy",
    "InboxFull",
    "NoHealthyTarget",
    "NotConnected",
    "RetriesExhausted",
    "SignatureFailure",
    "Throttled",
    "Unavailable",
    "UpstreamError",
    "UpstreamTimeout",
    "__version__",
    "load_gateway",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bizproxy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
