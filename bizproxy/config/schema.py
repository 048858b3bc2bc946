"""The JSON Schema of routes.yaml, generated from the models, for editors and CI.

Typed values appear in their written forms (durations as `250ms` or a number of
seconds, sizes as `1MiB` or bytes), so an editor accepts what the loader accepts.
The schema checks each section's shape; references between sections, templates and
the files a config names are for `bizproxy check`.
"""

from __future__ import annotations

import json
from typing import Any

from bizproxy.config.models import RoutesConfig

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def routes_json_schema() -> dict[str, Any]:
    """The JSON Schema of routes.yaml."""
    schema = RoutesConfig.model_json_schema()
    _close_named_maps(schema)
    return {"$schema": DIALECT, **schema}


def render_schema() -> str:
    """The schema as `bizproxy schema` prints it and schemas/routes.schema.json holds it."""
    return json.dumps(routes_json_schema(), indent=2, ensure_ascii=False) + "\n"


def _close_named_maps(node: Any) -> None:
    """Maps keyed by a name pattern accept no key outside that pattern."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_named_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_named_maps(value)
