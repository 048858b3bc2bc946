"""Jinja2 templates of routes.yaml, in a sandbox, checked at load time and compiled once.

Templates see `path`, `query`, `headers`, `body`, `method` and `tag` when they render,
and nothing else: no globals, a few pure filters, and undefined names raise instead of
rendering as empty text. Checking a template parses it without generating code, which
keeps `bizproxy check` fast on large configs; `compile_template` does the full work once
per distinct source.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

TEMPLATE_NAMES = frozenset({"path", "query", "headers", "body", "method", "tag"})
"""The names a template sees at render time."""

_SAFE_FILTERS = (
    "abs",
    "capitalize",
    "d",
    "default",
    "first",
    "float",
    "int",
    "join",
    "last",
    "length",
    "lower",
    "replace",
    "round",
    "string",
    "title",
    "tojson",
    "trim",
    "truncate",
    "upper",
    "urlencode",
)


class _StrictUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose message for a missing key of `query`, `headers` or `path`
    names the key alone, not the Python type of the mapping that lacks it."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint is None and isinstance(self._undefined_obj, Mapping):
            return f"no value named {self._undefined_name!r}"
        message: str = super()._undefined_message
        return message


_ENVIRONMENT = ImmutableSandboxedEnvironment(
    undefined=_StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_ENVIRONMENT.globals.clear()
_ENVIRONMENT.filters = {name: _ENVIRONMENT.filters[name] for name in _SAFE_FILTERS}

_FORBIDDEN = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def is_template(source: str) -> bool:
    """True when the text holds Jinja2 syntax; plain text needs no rendering."""
    return "{{" in source or "{%" in source or "{#" in source


def literal(text: str) -> str:
    """Template source that renders exactly `text`, whatever braces it holds."""
    return text.replace("{", "{{ '{' }}") if "{" in text else text


def check_template(source: str) -> None:
    """Raise `jinja2.TemplateSyntaxError` when the template would not compile."""
    _parse(source)


def compile_template(source: str) -> jinja2.Template:
    """Compile a template in the sandbox; raise `jinja2.TemplateSyntaxError` when invalid."""
    _parse(source)
    return _compile(source)


def referenced_names(source: str) -> set[str]:
    """The top-level names the template reads, such as `path` or `query`.

    Names the template assigns itself (loop variables, `set`, macro parameters) are left
    out; this walks the syntax tree, far cheaper than Jinja2's own code-generating scan.
    """
    return set(_names(source))


def referenced_path_params(source: str) -> set[str]:
    """The path parameters the template reads as `path.x` or `path['x']`."""
    return set(_path_params(source))


@functools.lru_cache(maxsize=4096)
def _path_params(source: str) -> frozenset[str]:
    found: set[str] = set()
    tree = _parse(source)
    for node in tree.find_all(nodes.Getattr):
        if _reads_path(node.node):
            found.add(node.attr)
    for item in tree.find_all(nodes.Getitem):
        key = item.arg
        if _reads_path(item.node) and isinstance(key, nodes.Const) and isinstance(key.value, str):
            found.add(key.value)
    return frozenset(found)


def _reads_path(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "path"


@functools.lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Template:
    tree = _ENVIRONMENT.parse(source)
    for node in tree.find_all(_FORBIDDEN):
        raise jinja2.TemplateAssertionError(
            "templates may not include, import or extend other templates", node.lineno
        )
    for used in tree.find_all(nodes.Filter):
        if used.name not in _ENVIRONMENT.filters:
            raise jinja2.TemplateAssertionError(f"no filter named {used.name!r}", used.lineno)
    for test in tree.find_all(nodes.Test):
        if test.name not in _ENVIRONMENT.tests:
            raise jinja2.TemplateAssertionError(f"no test named {test.name!r}", test.lineno)
    return tree


@functools.lru_cache(maxsize=4096)
def _names(source: str) -> frozenset[str]:
    tree = _parse(source)
    loaded: set[str] = set()
    assigned: set[str] = set()
    for name in tree.find_all(nodes.Name):
        (loaded if name.ctx == "load" else assigned).add(name.name)
    return frozenset(loaded - assigned)


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> jinja2.Template:
    return _ENVIRONMENT.from_string(source)


class RestOfPath(str):
    """A `{name:path}` parameter's value: its slashes are kept when rendered into a path."""

    __slots__ = ()


class UnsafePathValue(ValueError):
    """Raised when a value printed into an upstream path is, or holds, '.' or '..'."""


def encode_path_value(value: object) -> str:
    """Percent-encode what a path template prints: a value cannot add a query, a fragment
    or a segment; only a rest-of-path parameter keeps its slashes. A dot-segment would
    climb the upstream's path wherever it is normalised, so it is refused."""
    text = "" if value is None else str(value)
    rest_of_path = isinstance(value, RestOfPath)
    if any(segment in (".", "..") for segment in (text.split("/") if rest_of_path else [text])):
        raise UnsafePathValue(f"{text!r} would be a '.' or '..' segment of the upstream path")
    return quote(text, safe="/" if rest_of_path else "")


_PATH_ENVIRONMENT = _ENVIRONMENT.overlay(finalize=encode_path_value)


class Renderable(Protocol):
    """What a compiled template offers: a Jinja2 template, or a faster equivalent."""

    def render(self, context: dict[str, Any], /) -> str: ...


class PathParameterTemplate:
    """A path template made only of text and `{{ path.name }}`: rendered by joining
    strings, without Jinja2's per-render context. Same output as the Jinja2 template."""

    __slots__ = ("_parts",)

    def __init__(self, parts: tuple[tuple[bool, str], ...]) -> None:
        self._parts = parts
        """(is_parameter, text or parameter name), in order."""

    def render(self, context: dict[str, Any]) -> str:
        path = context["path"]
        return "".join(
            encode_path_value(path[value]) if is_parameter else value
            for is_parameter, value in self._parts
        )


def _simple_path_parts(source: str) -> tuple[tuple[bool, str], ...] | None:
    tree = _parse(source)
    parts: list[tuple[bool, str]] = []
    for output in tree.body:
        if not isinstance(output, nodes.Output):
            return None
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append((False, node.data))
            elif (
                isinstance(node, nodes.Getattr)
                and isinstance(node.node, nodes.Name)
                and node.node.name == "path"
            ):
                parts.append((True, node.attr))
            else:
                return None
    return tuple(parts)


def compile_path_template(source: str) -> Renderable:
    """Compile an upstream path template: every printed value is percent-encoded."""
    parts = _simple_path_parts(source)
    if parts is not None:
        return PathParameterTemplate(parts)
    _parse(source)
    return _PATH_ENVIRONMENT.from_string(source)


def encode_json_value(value: object) -> str:
    """What a JSON body template prints: strings escaped for a place between quotes,
    everything else as its JSON text, so a value cannot add fields or break the JSON.
    Output of `| tojson` is JSON already and goes in as it is."""
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)[1:-1]
    return json.dumps(value, allow_nan=False)


_JSON_ENVIRONMENT = _ENVIRONMENT.overlay(finalize=encode_json_value)


def compile_json_template(source: str) -> jinja2.Template:
    """Compile a JSON body template: printed values are JSON-encoded (see above)."""
    _parse(source)
    return _JSON_ENVIRONMENT.from_string(source)
