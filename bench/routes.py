"""The routes.yaml files the proxy table serves: N forward routes to one static upstream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

HIT_PATH = "/hit/1"
GUARDED_PATH = "/hit-guarded/1"


@dataclass(frozen=True)
class RouteFile:
    """A generated routes.yaml and the paths the scenarios request from it."""

    path: Path
    routes: int
    hit_path: str = HIT_PATH
    guarded_path: str = GUARDED_PATH


def routes_config(
    count: int, upstream_url: str, *, hit_at: Literal["middle", "end"] = "end"
) -> dict[str, Any]:
    """A config with ``count`` routes: fillers, a plain hit route and a guarded hit route.

    Every route forwards ``/.../{id}`` to ``/static/{id}``. The guarded route carries the
    throttle tag and goes to an upstream with a retry policy; its budget is far above any
    rate reached here, so it costs work without ever refusing. The two hit routes sit at
    the end of the list (or in its middle), so matching passes every filler first.
    """
    forward = {"path": "/static/{{ path.id }}"}
    methods = ["GET", "POST"]
    fillers = [
        {
            "path": f"/r{index}/{{id}}",
            "methods": methods,
            "forward": {"upstream": "static", **forward},
        }
        for index in range(max(count - 2, 0))
    ]
    hits = [
        {"path": "/hit/{id}", "methods": methods, "forward": {"upstream": "static", **forward}},
        {
            "path": "/hit-guarded/{id}",
            "methods": methods,
            "tag": "bench",
            "forward": {"upstream": "static_guarded", **forward},
        },
    ]
    middle = len(fillers) // 2 if hit_at == "middle" else len(fillers)
    return {
        "version": 1,
        "upstreams": {
            "static": {"url": upstream_url},
            "static_guarded": {"url": upstream_url, "retry": "bench"},
        },
        "retry_policies": {"bench": {"attempts": 2, "retry_on": ["connect-error"]}},
        "throttles": {"bench": {"rate": "1000000/s", "burst": 1000000}},
        "routes": fillers[:middle] + hits + fillers[middle:],
    }


def write_routes(work: Path, count: int, upstream_url: str) -> RouteFile:
    """Write the ``count``-route config under ``work``; return where and what to request."""
    path = work / f"routes-{count}.yaml"
    text = yaml.safe_dump(routes_config(count, upstream_url), sort_keys=False, width=100)
    path.write_text(text)
    return RouteFile(path=path, routes=count)
