"""Checks across sections of routes.yaml, and of the files and code it names.

These run on the parsed document rather than on the models, so that they still run
when some section fails schema validation: one pass reports every problem. Each check
skips values of the wrong kind, which the schema validation reports on its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from bizproxy import templates
from bizproxy.config.document import Document, KeyPath, suggest
from bizproxy.config.models import deliver_methods_problem, destination_problem
from bizproxy.config.paths import route_parameters, route_shape
from bizproxy.config.types import HTTP_METHODS, is_plugin_path
from bizproxy.plugins import PluginError, resolve_plugin

_RETRY_PLUGIN_ARGUMENTS = ("exception", "attempt")
_THROTTLE_PLUGIN_ARGUMENTS = ("tag",)


@dataclass
class Resources:
    """What the checks loaded from outside the config file, for the runtime to reuse."""

    files: list[Path] = field(default_factory=list)
    schemas: dict[Path, Any] = field(default_factory=dict)
    plugins: dict[str, Callable[..., Any]] = field(default_factory=dict)


def is_template_path(path: KeyPath) -> bool:
    """True for the values that routes.yaml reads as Jinja2 templates."""
    if len(path) < 4 or path[0] != "routes" or path[2] != "forward":
        return False
    return (len(path) == 4 and path[3] in ("path", "body")) or (
        len(path) == 5 and path[3] in ("query", "headers")
    )


def check_document(document: Document, *, base_dir: Path) -> Resources:
    """Add every cross-section problem to the document; return what was loaded."""
    data = document.data if isinstance(document.data, dict) else {}
    resources = Resources()
    _check_destinations(document, data)
    _check_references(document, data)
    _check_collisions(document, data)
    _check_templates(document, data)
    _check_schema_files(document, data, base_dir, resources)
    _check_plugins(document, data, base_dir, resources)
    _check_workers(document, data)
    return resources


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _routes(data: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    routes = data.get("routes")
    if isinstance(routes, list):
        for index, route in enumerate(routes):
            if isinstance(route, dict):
                yield index, route


def _check_destinations(document: Document, data: dict[str, Any]) -> None:
    for index, route in _routes(data):
        has_forward = route.get("forward") is not None
        has_deliver = route.get("deliver") is not None
        message = destination_problem(has_forward, has_deliver)
        methods = _methods(route)
        if message is None and has_deliver and methods is not None:
            message = deliver_methods_problem(tuple(methods))
        if message is not None:
            document.add(("routes", index), message)


def _check_references(document: Document, data: dict[str, Any]) -> None:
    upstreams = _mapping(data.get("upstreams"))
    policies = _mapping(data.get("retry_policies"))
    tags = _mapping(data.get("throttles"))

    for name in upstreams:
        _reference(
            document, ("upstreams", name, "retry"), "retry policy", "retry_policies", policies
        )
    for index, _route in _routes(data):
        here: KeyPath = ("routes", index)
        _reference(document, (*here, "tag"), "tag", "throttles", tags)
        for action in ("forward", "deliver"):
            _reference(document, (*here, action, "upstream"), "upstream", "upstreams", upstreams)
        _reference(
            document, (*here, "forward", "retry"), "retry policy", "retry_policies", policies
        )


def _reference(
    document: Document, path: KeyPath, noun: str, section: str, names: Collection[str]
) -> None:
    value = document.get(path)
    if not isinstance(value, str) or value in names:
        return
    hint = suggest(value, names)
    if not hint:
        declared = ", ".join(sorted(names)) if names else "none"
        hint = f"; {section} declares {declared}"
    document.add(path, f"unknown {noun} {document.show(path, value)}{hint}")


def _route_parameters(route: dict[str, Any]) -> dict[str, str] | None:
    path = route.get("path")
    if not isinstance(path, str):
        return None
    try:
        return route_parameters(path)
    except ValueError:
        return None


def _methods(route: dict[str, Any]) -> list[str] | None:
    methods = route.get("methods", ["GET"])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        return None
    return [method.upper() for method in methods if method.upper() in HTTP_METHODS]


def _check_collisions(document: Document, data: dict[str, Any]) -> None:
    served: dict[tuple[str, str], int] = {}
    for index, route in _routes(data):
        methods = _methods(route)
        if methods is None or _route_parameters(route) is None:
            continue
        shape = route_shape(route["path"])
        clashes: dict[int, list[str]] = {}
        for method in dict.fromkeys(methods):
            earlier = served.setdefault((method, shape), index)
            if earlier != index:
                clashes.setdefault(earlier, []).append(method)
        for earlier, shared in clashes.items():
            line = document.mark(("routes", earlier)).line
            other = document.get(("routes", earlier, "path"))
            document.add(
                ("routes", index, "path"),
                f"{', '.join(shared)} {_plain(document, index, route['path'])} collides with "
                f"routes[{earlier}] on line {line} ({_plain(document, earlier, other)}), which "
                "matches the same requests",
            )


def _plain(document: Document, index: int, route_path: object) -> str:
    """A route path as written, or its reference when it came from the environment."""
    path: KeyPath = ("routes", index, "path")
    if document.substituted_text(path) is None:
        return str(route_path)
    return document.show(path, None)


def _check_templates(document: Document, data: dict[str, Any]) -> None:
    for index, route in _routes(data):
        forward = route.get("forward")
        if not isinstance(forward, dict):
            continue
        parameters = _route_parameters(route)
        for path, source in _template_values(("routes", index, "forward"), forward):
            _check_template(document, path, source, route.get("path"), parameters)


def _template_values(base: KeyPath, forward: dict[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    for key in ("path", "body"):
        if isinstance(forward.get(key), str):
            yield (*base, key), forward[key]
    for key in ("query", "headers"):
        for name, value in _mapping(forward.get(key)).items():
            if isinstance(value, str):
                yield (*base, key, name), value


def _check_template(
    document: Document,
    path: KeyPath,
    source: str,
    route_path: object,
    parameters: dict[str, str] | None,
) -> None:
    if not templates.is_template(source):
        _check_static(document, path, source)
        return
    try:
        templates.check_template(source)
    except jinja2.TemplateSyntaxError as err:
        written = document.substituted_text(path)
        if written is not None:
            # The parser's message may quote the substituted value: show the reference.
            document.add(
                path,
                f"template {written!r} does not compile once its variables are substituted "
                "(values not shown)",
            )
            return
        where = f" (template line {err.lineno})" if "\n" in source else ""
        document.add(path, f"template does not compile: {err.message}{where}")
        return

    names = sorted(templates.referenced_names(source) - templates.TEMPLATE_NAMES)
    if names and document.substituted_text(path) is not None:
        document.add(
            path,
            f"template {document.substituted_text(path)!r} reads names templates do not see "
            "once its variables are substituted (values not shown)",
        )
        return
    if names:
        seen = ", ".join(sorted(templates.TEMPLATE_NAMES))
        document.add(
            path,
            f"template reads {names[0]!r}, which templates do not see; they see {seen}"
            + suggest(names[0], templates.TEMPLATE_NAMES),
        )
    if parameters is None:
        return
    shown_path = document.show((*path[:2], "path"), route_path)
    for name in sorted(templates.referenced_path_params(source) - set(parameters)):
        document.add(
            path,
            f"template reads path.{name}, but route path {shown_path} has no "
            f"parameter {name!r}" + suggest(name, parameters),
        )


def _check_static(document: Document, path: KeyPath, source: str) -> None:
    if path[-1] == "path" and not source.startswith("/"):
        document.add(
            path, f"expected a path that starts with '/', got {document.show(path, source)}"
        )
    elif path[-1] == "body" and len(path) == 4:
        try:
            json.loads(source)
        except ValueError as err:
            document.add(path, f"expected a JSON body or a template of one; {err}")


def _check_schema_files(
    document: Document, data: dict[str, Any], base_dir: Path, resources: Resources
) -> None:
    problems: dict[Path, str | None] = {}
    for index, route in _routes(data):
        written = route.get("body_schema")
        if not isinstance(written, str) or not written:
            continue
        path = (base_dir / written).resolve()
        if path not in problems:
            resources.files.append(path)
            shown = document.show(("routes", index, "body_schema"), written)
            problems[path] = _load_schema(path, shown, resources)
        message = problems[path]
        if message is not None:
            document.add(("routes", index, "body_schema"), message)


def _load_schema(path: Path, shown: str, resources: Resources) -> str | None:
    try:
        schema = json.loads(path.read_bytes())
    except FileNotFoundError:
        return (
            f"schema file {shown} does not exist "
            "(a relative path starts at the config file's folder)"
        )
    except OSError as err:
        return f"cannot read schema file {shown}: {err.strerror}"
    except UnicodeDecodeError:
        return f"schema file {shown} is not UTF-8 text"
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        return f"schema file {shown} is not JSON: {err.msg} at {where}"

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as err:
        where = "/".join(str(part) for part in err.path) or "the top"
        detail = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        return f"schema file {shown} is not a valid JSON Schema: {detail} (at {where})"
    except Exception as err:  # validator_for rejects non-mapping, non-boolean schemas
        return f"schema file {shown} is not a valid JSON Schema: {err}"
    resources.schemas[path] = schema
    return None


def _check_plugins(
    document: Document, data: dict[str, Any], base_dir: Path, resources: Resources
) -> None:
    for name in _mapping(data.get("retry_policies")):
        path = ("retry_policies", name, "plugin")
        _load_plugin(document, path, _RETRY_PLUGIN_ARGUMENTS, base_dir, resources)
    for name in _mapping(data.get("throttles")):
        path = ("throttles", name, "plugin")
        _load_plugin(document, path, _THROTTLE_PLUGIN_ARGUMENTS, base_dir, resources)


def _load_plugin(
    document: Document,
    path: KeyPath,
    arguments: tuple[str, ...],
    base_dir: Path,
    resources: Resources,
) -> None:
    spec = document.get(path)
    if not isinstance(spec, str) or not is_plugin_path(spec) or spec in resources.plugins:
        return
    try:
        resources.plugins[spec] = resolve_plugin(spec, arguments=arguments, search_path=(base_dir,))
    except PluginError as err:
        message = str(err).replace(repr(spec), document.show(path, spec))
        document.add(path, message)


def _check_workers(document: Document, data: dict[str, Any]) -> None:
    workers = _mapping(data.get("server")).get("workers")
    store = data.get("throttle_store", "memory")
    several = isinstance(workers, int) and not isinstance(workers, bool) and workers > 1
    if several and store == "memory":
        document.add(
            ("server", "workers"),
            f"{workers} workers each keep their own memory throttle budgets, so a budget "
            f"admits up to {workers} times its rate; use throttle_store: {{redis: URL}} "
            "to share them",
            severity="warning",
        )
