"""What changed between two configs, in words an operator scans: never a secret value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

from bizproxy.config.models import RoutesConfig
from bizproxy.units import format_duration

_DURATION_FIELDS = frozenset(
    {
        "connect",
        "read",
        "write",
        "pool",
        "initial",
        "max",
        "per_try_timeout",
        "deadline",
        "drain_timeout",
        "cooldown",
        "tolerance",
        "max_wait",
        "keepalive_expiry",
        "timeout",
    }
)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A model as `dotted.key -> leaf value`, for comparing two versions field by field."""
    if isinstance(value, BaseModel):
        value = {name: getattr(value, name) for name in type(value).model_fields}
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _comparable(value: Any) -> Any:
    # Compared, never shown: a changed secret is reported as changed, without its value.
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def show(field: str, value: Any) -> str:
    if isinstance(value, SecretStr):
        return "[secret]"
    if isinstance(value, float) and field in _DURATION_FIELDS:
        return format_duration(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


def changed_fields(old: Any, new: Any) -> list[str]:
    before, after = flatten(old), flatten(new)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key), after.get(key)
        if _comparable(was) == _comparable(now):
            continue
        if isinstance(was, SecretStr) or isinstance(now, SecretStr):
            changes.append(f"{key} changed")
            continue
        field = key.rsplit(".", 1)[-1]
        shown_was = "unset" if key not in before else show(field, was)
        shown_now = "unset" if key not in after else show(field, now)
        changes.append(f"{key} {shown_was} -> {shown_now}")
    return changes


def route_key(route: Any) -> str:
    return f"{','.join(route.methods)} {route.path}"


def describe_changes(old: RoutesConfig, new: RoutesConfig) -> list[str]:
    """One line per change: routes added and removed, sections changed with their fields."""
    lines: list[str] = []
    old_routes = {route_key(r): r for r in old.routes}
    new_routes = {route_key(r): r for r in new.routes}
    lines += [f"route added: {key}" for key in new_routes if key not in old_routes]
    lines += [f"route removed: {key}" for key in old_routes if key not in new_routes]
    for key in new_routes.keys() & old_routes.keys():
        fields = changed_fields(old_routes[key], new_routes[key])
        if fields:
            lines.append(f"route changed: {key}: {'; '.join(fields)}")
    sections: tuple[tuple[str, Mapping[str, Any], Mapping[str, Any]], ...] = (
        ("upstream", old.upstreams, new.upstreams),
        ("retry policy", old.retry_policies, new.retry_policies),
        ("throttle budget", old.throttles, new.throttles),
    )
    for label, before, after in sections:
        lines += [f"{label} added: {name}" for name in after if name not in before]
        lines += [f"{label} removed: {name}" for name in before if name not in after]
        for name in sorted(before.keys() & after.keys()):
            fields = changed_fields(before[name], after[name])
            if fields:
                lines.append(f"{label} changed: {name}: {'; '.join(fields)}")
    for field in changed_fields(old.server, new.server):
        lines.append(f"server changed: {field}")
    if changed_fields({"store": old.throttle_store}, {"store": new.throttle_store}):
        lines.append("throttle store changed")
    return lines


def summarize(old: RoutesConfig, new: RoutesConfig) -> str:
    lines = describe_changes(old, new)
    return "; ".join(lines) if lines else "no changes to routes, upstreams or policies"
