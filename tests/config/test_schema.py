"""The JSON Schema of routes.yaml: generated, committed, and agreeing with the loader."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from bizproxy.config.schema import render_schema, routes_json_schema
from bizproxy.config.yaml_tree import parse_document

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "schemas" / "routes.schema.json"


def test_committed_schema_matches_the_models() -> None:
    """schemas/routes.schema.json is exactly what `bizproxy schema` prints."""
    assert COMMITTED.read_text(encoding="utf-8") == render_schema(), (
        "regenerate it with: python -m bizproxy schema > schemas/routes.schema.json"
    )


def test_generated_schema_is_a_valid_json_schema() -> None:
    """The schema itself passes the 2020-12 meta-schema."""
    Draft202012Validator.check_schema(routes_json_schema())


def test_bundled_routes_yaml_validates_against_the_committed_schema() -> None:
    """The bundled config, after substitution, is valid under the independent validator."""
    text = (REPO / "routes.yaml").read_text(encoding="utf-8")
    environ = {"PAYMENTS_WEBHOOK_SECRET": "whsec_dGVzdC1zZWNyZXQtZm9yLXNjaGVtYQ=="}
    document = parse_document(text, filename="routes.yaml", environ=environ)
    assert document.problems == []
    validator = Draft202012Validator(json.loads(COMMITTED.read_text(encoding="utf-8")))
    assert [error.message for error in validator.iter_errors(document.data)] == []


def test_schema_rejects_unknown_keys_and_bad_units() -> None:
    """The schema is closed to unknown keys and checks the written form of units."""
    validator = Draft202012Validator(routes_json_schema())
    assert not validator.is_valid({"version": 1, "upstream": {}})
    assert not validator.is_valid({"version": 1, "server": {"max_body": "1 mebibyte"}})
    assert not validator.is_valid({"version": 1, "upstreams": {"bad name": {"url": "http://a"}}})
    assert validator.is_valid({"version": 1, "server": {"max_body": "1MiB", "drain_timeout": 5}})
