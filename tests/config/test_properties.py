"""Property tests: generated valid configs load; mutated ones fail with located problems."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from bizproxy.config import LoadedConfig, load_config_text
from bizproxy.config.document import format_path
from bizproxy.config.schema import routes_json_schema
from bizproxy.errors import ConfigError
from tests.config.strategies import configs, dump

BASE_DIR = Path(__file__).parent
SCHEMA = Draft202012Validator(routes_json_schema())
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=4), children, max_size=2)
    ),
    max_leaves=4,
)

Path_ = tuple[str | int, ...]


def _load(document: Any) -> LoadedConfig:
    return load_config_text(dump(document), filename="routes.yaml", base_dir=BASE_DIR, environ={})


def _problems_of(document: Any) -> list[Any]:
    try:
        _load(document)
    except ConfigError as err:
        return list(err.problems)
    raise AssertionError("the mutated config loaded")


def _assert_located(problems: list[Any]) -> None:
    for problem in problems:
        assert problem.file == "routes.yaml"
        assert problem.line >= 1 and problem.column >= 1, problem


def _nodes(node: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, node
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield from _nodes(child, (*path, key))


def _closed_mappings(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Mappings whose keys the schema fixes: not headers, query or the named sections."""
    named = ("upstreams", "retry_policies", "throttles")
    if isinstance(node, dict):
        if not (len(path) == 1 and path[0] in named):
            yield path
        for key, child in node.items():
            if key not in ("headers", "query"):
                yield from _closed_mappings(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _closed_mappings(child, (*path, index))


def _set(document: Any, path: Path_, value: Any) -> None:
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value


@PROPERTY_SETTINGS
@given(configs())
def test_generated_valid_configs_load(document: dict[str, Any]) -> None:
    """Every generated valid config loads, and the committed schema accepts it too."""
    loaded = _load(document)
    assert len(loaded.model.routes) == len(document["routes"])
    assert list(SCHEMA.iter_errors(document)) == []


@PROPERTY_SETTINGS
@given(configs(), st.data())
def test_unknown_keys_are_reported_at_the_key(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """An unknown key anywhere the schema is closed is an error placed at that key."""
    target = data.draw(st.sampled_from(list(_closed_mappings(document))))
    mutated = copy.deepcopy(document)
    parent = mutated
    for key in target:
        parent = parent[key]
    parent["zz_unknown"] = 1
    problems = _problems_of(mutated)
    _assert_located(problems)
    wanted = format_path((*target, "zz_unknown"))
    assert any(p.path == wanted and p.message.startswith("unknown key") for p in problems)


@PROPERTY_SETTINGS
@given(configs(), st.data())
def test_wrong_types_are_reported_at_the_value(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """A list where a scalar belongs is an error placed at that value."""
    leaves = [path for path, node in _nodes(document) if path and not isinstance(node, dict | list)]
    target = data.draw(st.sampled_from(leaves))
    mutated = copy.deepcopy(document)
    _set(mutated, target, [[1]])
    problems = _problems_of(mutated)
    _assert_located(problems)
    assert format_path(target) in {p.path for p in problems}


@PROPERTY_SETTINGS
@given(configs(), st.data())
def test_broken_references_are_reported(document: dict[str, Any], data: st.DataObject) -> None:
    """A route naming an upstream that does not exist is an error at that name."""
    if not document["routes"]:
        document["routes"] = [{"path": "/x", "forward": {"upstream": "absent"}}]
    index = data.draw(st.integers(0, len(document["routes"]) - 1))
    route = document["routes"][index]
    action = "forward" if "forward" in route else "deliver"
    route[action]["upstream"] = "zz_absent"
    problems = _problems_of(document)
    _assert_located(problems)
    assert any(
        p.path == f"routes[{index}].{action}.upstream"
        and "unknown upstream 'zz_absent'" in p.message
        for p in problems
    )


@PROPERTY_SETTINGS
@given(configs(), st.data(), JSON_VALUES)
def test_any_mutation_loads_or_raises_config_error(
    document: dict[str, Any], data: st.DataObject, value: Any
) -> None:
    """Replacing any value with any other never raises anything but ConfigError."""
    paths = [path for path, _ in _nodes(document) if path]
    target = data.draw(st.sampled_from(paths))
    _set(document, target, value)
    try:
        _load(document)
    except ConfigError as err:
        _assert_located(list(err.problems))


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    """Arbitrary text never raises anything but ConfigError."""
    try:
        load_config_text(text, filename="routes.yaml", base_dir=BASE_DIR, environ={})
    except ConfigError as err:
        _assert_located(list(err.problems))


@PROPERTY_SETTINGS
@given(configs(), st.data())
def test_edited_text_loads_or_raises_config_error(
    document: dict[str, Any], data: st.DataObject
) -> None:
    """Valid YAML text with characters cut or inserted never raises anything else."""
    text = dump(document)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        insert = data.draw(
            st.sampled_from(["", ":", "- ", "&a ", "*a", "{", "[", "'", "\n  ", "!!str "])
        )
        text = text[:at] + insert + text[at + cut :]
    try:
        load_config_text(text, filename="routes.yaml", base_dir=BASE_DIR, environ={})
    except ConfigError as err:
        _assert_located(list(err.problems))
