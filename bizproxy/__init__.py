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
    from bizproxy.proxy import HTTPXFastAPIProxy

__version__ = "0.1.0"

_LAZY = {
    "HTTPXFastAPIProxy": "bizproxy.proxy",
}

__all__ = [
    "BusinessProxyException",
    "BusinessProxyInterface",
    "CircuitOpen",
    "ConfigError",
    "ConfigProblem",
    "ConnectionFailure",
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
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bizproxy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
