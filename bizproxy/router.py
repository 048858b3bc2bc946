"""Route lookup in time that grows with the path's depth, not with the number of routes.

Patterns are Starlette-style: `/api/orders/{order_id}` matches one segment per
parameter; `/files/{rest:path}` (last segment only) matches the rest of the path,
slashes included. Lookup walks a segment trie: literal segments first, then a
parameter, then a rest-of-path parameter, so `/a/new` wins over `/a/{id}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote

RouteT = TypeVar("RouteT")

_PARAMETER = re.compile(r"^\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<kind>str|path))?\}$")


class PatternError(ValueError):
    """Raised when a route pattern cannot be parsed."""


@dataclass(frozen=True)
class Segment:
    literal: str | None = None
    parameter: str | None = None
    rest_of_path: bool = False


def parse_pattern(pattern: str) -> tuple[Segment, ...]:
    """Split a route pattern into literal and parameter segments."""
    if not pattern.startswith("/"):
        raise PatternError(f"a route path must start with '/', got {pattern!r}")
    parts = pattern[1:].split("/")
    segments: list[Segment] = []
    for position, part in enumerate(parts):
        if "{" not in part and "}" not in part:
            segments.append(Segment(literal=part))
            continue
        match = _PARAMETER.match(part)
        if match is None:
            raise PatternError(
                f"segment {part!r} of {pattern!r} must be a literal or a whole parameter "
                "such as {id} or {rest:path}"
            )
        rest = match.group("kind") == "path"
        if rest and position != len(parts) - 1:
            raise PatternError(f"{{{match.group('name')}:path}} must be the last segment")
        segments.append(Segment(parameter=match.group("name"), rest_of_path=rest))
    return tuple(segments)


@dataclass
class _Node(Generic[RouteT]):
    literals: dict[str, _Node[RouteT]] = field(default_factory=dict)
    parameter: tuple[str, _Node[RouteT]] | None = None
    rest_of_path: tuple[str, dict[str, RouteT]] | None = None
    methods: dict[str, RouteT] = field(default_factory=dict)


@dataclass(frozen=True)
class Match(Generic[RouteT]):
    """A path matched; `route` is None when no route takes the method (405, see allowed)."""

    route: RouteT | None
    params: dict[str, str]
    allowed: frozenset[str]


class Router(Generic[RouteT]):
    """Maps (method, raw path) to a route and its decoded path parameters."""

    def __init__(self) -> None:
        self._root: _Node[RouteT] = _Node()

    def add(self, pattern: str, methods: Iterable[str], route: RouteT) -> None:
        node = self._root
        segments = parse_pattern(pattern)
        for segment in segments:
            if segment.rest_of_path:
                assert segment.parameter is not None
                if node.rest_of_path is None:
                    node.rest_of_path = (segment.parameter, {})
                self._set_methods(node.rest_of_path[1], methods, route, pattern)
                return
            if segment.parameter is not None:
                if node.parameter is None:
                    node.parameter = (segment.parameter, _Node())
                node = node.parameter[1]
            else:
                assert segment.literal is not None
                node = node.literals.setdefault(segment.literal, _Node())
        self._set_methods(node.methods, methods, route, pattern)

    @staticmethod
    def _set_methods(
        table: dict[str, RouteT], methods: Iterable[str], route: RouteT, pattern: str
    ) -> None:
        for method in methods:
            if method in table:
                raise PatternError(f"{method} {pattern} is already routed")
            table[method] = route

    def match(self, method: str, raw_path: str) -> Match[RouteT] | None:
        """Find the route for a request; None when no pattern matches the path at all."""
        if not raw_path.startswith("/"):
            return None
        parts = raw_path[1:].split("/")
        found = self._walk(self._root, parts, 0, {})
        if found is None:
            return None
        methods, params = found
        route = methods.get(method)
        if route is None and method == "HEAD":
            route = methods.get("GET")
        allowed = set(methods)
        if "GET" in allowed:
            allowed.add("HEAD")
        decoded = {name: unquote(value) for name, value in params.items()}
        return Match(route=route, params=decoded, allowed=frozenset(allowed))

    def _walk(
        self, node: _Node[RouteT], parts: list[str], index: int, params: dict[str, str]
    ) -> tuple[dict[str, RouteT], dict[str, str]] | None:
        if index == len(parts):
            return (node.methods, params) if node.methods else None
        part = parts[index]
        child = node.literals.get(unquote(part) if "%" in part else part)
        if child is not None:
            found = self._walk(child, parts, index + 1, params)
            if found is not None:
                return found
        if node.parameter is not None and part:
            name, child = node.parameter
            found = self._walk(child, parts, index + 1, {**params, name: part})
            if found is not None:
                return found
        if node.rest_of_path is not None:
            name, methods = node.rest_of_path
            rest = "/".join(parts[index:])
            if rest:
                return methods, {**params, name: rest}
        return None
