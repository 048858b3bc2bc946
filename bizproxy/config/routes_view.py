"""The route table of a config as rows an operator reads: `bizproxy routes`."""

from __future__ import annotations

from bizproxy.config.models import PluginBudgetConfig, RoutesConfig


def route_rows(config: RoutesConfig) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for route in config.routes:
        if route.forward is not None:
            upstream = config.upstreams.get(route.forward.upstream)
            target = f"forward {route.forward.upstream}{route.forward.path or route.path}"
            retry = route.forward.retry or (upstream.retry if upstream else None)
        else:
            assert route.deliver is not None
            target = f"deliver {route.deliver.upstream}.receive()"
            retry = None
        budget = "-"
        if route.tag is not None:
            declared = config.throttles.get(route.tag)
            if isinstance(declared, PluginBudgetConfig):
                budget = f"plugin {declared.plugin}"
            elif declared is not None:
                budget = f"{declared.rate} burst {declared.capacity} {declared.on_exceed}"
        rows.append(
            (",".join(route.methods), route.path, target, route.tag or "-", retry or "-", budget)
        )
    return rows
