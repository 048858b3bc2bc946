"""Inbound route paths: `/api/orders/{order_id}`, `/files/{rest:path}`.

A parameter is `{name}` or `{name:type}` with the types starlette converts (str, int,
float, uuid, path). Two paths that differ only in parameter names match the same
requests, so collisions compare each path's shape, with names replaced by types.
"""

from __future__ import annotations

import functools
import re

from bizproxy.config.document import describe, suggest

CONVERTORS = ("str", "int", "float", "uuid", "path")
RESERVED_PREFIX = "/-/"

_PARAMETER = re.compile(r"\{([^{}]*)\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def route_parameters(path: str) -> dict[str, str]:
    """Return {name: type} of a route path's parameters; raise ValueError when malformed."""
    return dict(_parameters(path))


@functools.lru_cache(maxsize=8192)
def _parameters(path: str) -> tuple[tuple[str, str], ...]:
    if not path.startswith("/"):
        raise ValueError(f"expected a path that starts with '/', got {describe(path)}")
    if path.startswith(RESERVED_PREFIX) or path == RESERVED_PREFIX[:-1]:
        raise ValueError(
            f"paths under {RESERVED_PREFIX} are reserved for bizproxy's own endpoints, "
            f"got {describe(path)}"
        )
    if any(char in path for char in "?# \t\r\n"):
        raise ValueError(f"expected a path without spaces, '?' or '#', got {describe(path)}")
    if "{" in _PARAMETER.sub("", path) or "}" in _PARAMETER.sub("", path):
        raise ValueError(f"unbalanced '{{' or '}}' in path {describe(path)}")

    parameters: dict[str, str] = {}
    for match in _PARAMETER.finditer(path):
        name, _, convertor = match.group(1).partition(":")
        convertor = convertor or "str"
        _check_parameter(match.group(0), name, convertor, parameters)
        if convertor == "path" and match.end() != len(path):
            raise ValueError(f"a path-typed parameter {match.group(0)} must come last")
        parameters[name] = convertor
    return tuple(parameters.items())


def _check_parameter(text: str, name: str, convertor: str, seen: dict[str, str]) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"parameter {text} needs a name made of letters, digits and '_'")
    if convertor not in CONVERTORS:
        expected = ", ".join(CONVERTORS)
        raise ValueError(
            f"parameter {text} has unknown type {convertor!r}; expected one of {expected}"
            + suggest(convertor, CONVERTORS)
        )
    if name in seen:
        raise ValueError(f"parameter {{{name}}} appears twice in the path")


def route_shape(path: str) -> str:
    """The path with each parameter reduced to its type: /a/{x} and /a/{y} share a shape."""

    def replace(match: re.Match[str]) -> str:
        return "{" + (match.group(1).partition(":")[2] or "str") + "}"

    return _PARAMETER.sub(replace, path)
