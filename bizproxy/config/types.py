"""Field types of routes.yaml: typed values written as text, each with its JSON Schema form.

Each validator accepts what an operator writes (`250ms`, `1MiB`, `20/s`, `20%`, `get`)
and returns the parsed value the models hold (seconds, bytes, a `Rate`, a fraction, an
upper-case method). Messages end in ", got <value>" so the loader can swap the value
for its `${NAME}` reference when it came from the environment.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
)

from bizproxy import units
from bizproxy.config.document import describe, suggest

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")
RETRY_WORDS = ("connect-error", "timeout", "reset", "protocol")
DEFAULT_RETRY_ON: tuple[str | int, ...] = ("connect-error", "timeout", "reset", 502, 503, 504)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
TOKEN_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
PLUGIN_PATTERN = f"^{_DOTTED}:{_DOTTED}$"
_STATUS_RANGE = re.compile(r"^([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?$")

_NAME = re.compile(NAME_PATTERN)
_TOKEN = re.compile(TOKEN_PATTERN)
_PLUGIN = re.compile(PLUGIN_PATTERN)


def is_plugin_path(text: str) -> bool:
    """True for text shaped like package.module:attribute."""
    return _PLUGIN.match(text) is not None


def _text_or_number(value: object, expected: str) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {expected}, got {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected {expected}, got {describe(value)}")
    return value


def parse_duration_field(value: object) -> float:
    return units.parse_duration(_text_or_number(value, "a duration such as 250ms or 2s"))


def _size(value: object) -> int:
    checked = _text_or_number(value, "a size such as 512KiB or 1MiB")
    if isinstance(checked, float):
        raise ValueError(f"expected a size such as 512KiB or 1MiB, got {describe(value)}")
    return units.parse_size(checked)


def _rate(value: object) -> units.Rate:
    if isinstance(value, units.Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a rate such as 20/s or 100/min, got {describe(value)}")
    return units.parse_rate(value)


def _percentage(value: object) -> float:
    return units.parse_percentage(_text_or_number(value, "a percentage such as 20%"))


def _method(value: object) -> str:
    text = value.upper() if isinstance(value, str) else ""
    if text not in HTTP_METHODS:
        hint = suggest(text, HTTP_METHODS) if text else ""
        raise ValueError(
            f"expected an HTTP method such as GET or POST, got {describe(value)}{hint}"
        )
    return text


def _name(value: object) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            "expected a name of letters, digits, '_', '.' and '-' that starts with a letter "
            f"or '_', got {describe(value)}"
        )
    return value


def _header_name(value: object) -> str:
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ValueError(f"expected a header name such as X-Tenant, got {describe(value)}")
    return value


def _header_value(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a header value as text, got {describe(value)}")
    if any(char in value for char in "\r\n\0"):
        raise ValueError("a header value may not contain line breaks or NUL characters")
    return value


def _plugin(value: object) -> str:
    if not isinstance(value, str) or not _PLUGIN.match(value):
        raise ValueError(
            f"expected a plug-in import path such as package.module:function, got {describe(value)}"
        )
    return value


def _http_url(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got {describe(value)}")
    scheme, _, rest = value.partition("://")
    host = rest.split("/", 1)[0]
    if scheme.lower() not in ("http", "https") or not host:
        raise ValueError(f"expected an http:// or https:// URL, got {describe(value)}")
    if "?" in value or "#" in value:
        raise ValueError(
            f"expected an http:// or https:// URL without a query or fragment "
            f"(routes add those), got {describe(value)}"
        )
    try:
        port = urlsplit(value).port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(
            f"expected an http:// or https:// URL with a port from 1 to 65535, "
            f"got {describe(value)}"
        )
    return value


def _redis_url(value: object) -> str:
    scheme = value.partition("://")[0].lower() if isinstance(value, str) else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return str(value)


def _upstream_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected a path that starts with '/', got {describe(value)}")
    return value


def _retry_condition(value: object) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    if isinstance(value, str):
        if value in RETRY_WORDS:
            return value
        match = _STATUS_RANGE.match(value)
        if match and match.group(2) is None:
            return int(match.group(1))
        if match and int(match.group(1)) <= int(match.group(2)):
            return value
    words = ", ".join(RETRY_WORDS)
    hint = suggest(value, RETRY_WORDS) if isinstance(value, str) else ""
    raise ValueError(
        f"expected {words}, a status such as 503 or a range such as 500-599, "
        f"got {describe(value)}{hint}"
    )


def _client_key(value: object) -> str:
    if value == "client":
        return value
    if isinstance(value, str) and value.startswith("header:") and _TOKEN.match(value[7:]):
        return value
    raise ValueError(
        f"expected client or header:NAME such as header:X-Api-Key, got {describe(value)}"
    )


def _network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
    raise ValueError(f"expected an IP address or CIDR such as 10.0.0.0/8, got {describe(value)}")


def _webhook_secret(secret: SecretStr) -> SecretStr:
    """Standard-webhooks secrets are base64, optionally after a 'whsec_' prefix."""
    text = secret.get_secret_value().removeprefix("whsec_")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ValueError(
            "expected a standard-webhooks secret: 'whsec_' followed by base64 text "
            "(the value is not shown)"
        )
    return secret


def _non_empty_secret(secret: SecretStr) -> SecretStr:
    if not secret.get_secret_value():
        raise ValueError("expected a secret, got an empty string")
    return secret


def _resolve_path(value: object, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a file path, got {describe(value)}")
    base = (info.context or {}).get("base_dir")
    path = Path(value)
    return path if base is None else (Path(base) / path).resolve()


def _either(text_schema: dict[str, Any], number_schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [text_schema, number_schema]})


_DURATION_SCHEMA = _either(
    {"type": "string", "pattern": units.DURATION_PATTERN, "examples": ["250ms", "2s", "5m"]},
    {"type": "number", "minimum": 0, "description": "seconds"},
)

Duration = Annotated[float, PlainValidator(parse_duration_field), _DURATION_SCHEMA]
"""Seconds, written as 250ms, 2s, 5m or 1h (a bare number is seconds)."""

Size = Annotated[
    int,
    PlainValidator(_size),
    _either(
        {"type": "string", "pattern": units.SIZE_PATTERN, "examples": ["512KiB", "1MiB"]},
        {"type": "integer", "minimum": 0, "description": "bytes"},
    ),
]
"""Bytes, written as 512KiB, 1MiB or 10MB (a bare number is bytes)."""

RateValue = Annotated[
    units.Rate,
    PlainValidator(_rate),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": units.RATE_PATTERN, "examples": ["20/s"]}),
]
"""Events per period, written as 20/s, 100/min or 5000/h."""

Fraction = Annotated[
    float,
    PlainValidator(_percentage),
    _either(
        {"type": "string", "pattern": units.PERCENT_PATTERN, "examples": ["20%"]},
        {"type": "number", "minimum": 0, "maximum": 1, "description": "a fraction"},
    ),
]
"""A fraction from 0 to 1, written as 20% (a bare number from 0 to 1 is a fraction)."""

Method = Annotated[
    str,
    PlainValidator(_method),
    WithJsonSchema({"enum": [*HTTP_METHODS, *(m.lower() for m in HTTP_METHODS)]}),
]
"""An HTTP method in any case; the model holds it upper-cased."""

Name = Annotated[
    str, PlainValidator(_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
]
"""The name of an upstream, a retry policy or a throttle budget (a tag)."""

HeaderName = Annotated[
    str, PlainValidator(_header_name), WithJsonSchema({"type": "string", "pattern": TOKEN_PATTERN})
]

HeaderValue = Annotated[
    str,
    PlainValidator(_header_value),
    WithJsonSchema({"type": ["string", "number"], "pattern": "^[^\\r\\n\\x00]*$"}),
]

PluginPath = Annotated[
    str, PlainValidator(_plugin), WithJsonSchema({"type": "string", "pattern": PLUGIN_PATTERN})
]
"""A callable's import path, `package.module:attribute`."""

HttpUrl = Annotated[
    str,
    PlainValidator(_http_url),
    WithJsonSchema({"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+[^?#]*$"}),
]

RedisUrl = Annotated[
    str,
    PlainValidator(_redis_url),
    WithJsonSchema({"type": "string", "pattern": "^(redis|rediss|unix)://"}),
]

UpstreamPath = Annotated[
    str, PlainValidator(_upstream_path), WithJsonSchema({"type": "string", "pattern": "^/"})
]

RetryCondition = Annotated[
    str | int,
    PlainValidator(_retry_condition),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": list(RETRY_WORDS)},
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": "^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$"},
            ]
        }
    ),
]
"""A failure word, a status code (int) or a status range kept as text such as '500-599'."""

ClientKey = Annotated[
    str,
    PlainValidator(_client_key),
    WithJsonSchema({"type": "string", "pattern": "^(client|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"}),
]
"""What tells clients apart for a per-client budget: `client` (the address) or a header."""

Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    PlainValidator(_network),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["127.0.0.1", "10.0.0.0/8"]}),
]

Secret = Annotated[SecretStr, AfterValidator(_non_empty_secret)]
WebhookSecret = Annotated[SecretStr, AfterValidator(_webhook_secret)]

FilePath = Annotated[
    Path,
    PlainValidator(_resolve_path),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": "relative to the config file's folder"}),
]
"""A file path; relative paths resolve against the config file's folder."""
