"""Hypothesis strategies for valid routes.yaml documents, built as Python values."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import strategies as st

from bizproxy.config.yaml_tree import CoreSafeLoader

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
HEADER_NAMES = st.from_regex(r"X-[A-Za-z0-9-]{1,8}", fullmatch=True)
TRAPS = st.sampled_from(["yes", "NO", "on", "off", "y", "1:30", "0755", "0o17", "null", "~", ""])
PLAIN_TEXT = st.text(alphabet="abcXYZ019 -_./:;,!?'\"#&*@%", max_size=12)
TEXT = st.one_of(PLAIN_TEXT, TRAPS, st.integers(0, 999))
DURATIONS = st.one_of(
    st.integers(0, 5000).map(lambda n: f"{n}ms"),
    st.integers(0, 600).map(lambda n: f"{n}s"),
    st.integers(0, 10).map(lambda n: f"{n}m"),
    st.floats(0, 100, allow_nan=False).map(lambda f: round(f, 3)),
)
SIZES = st.one_of(
    st.integers(0, 10**9),
    st.integers(1, 1024).map(lambda n: f"{n}KiB"),
    st.integers(1, 64).map(lambda n: f"{n}MiB"),
)
RATES = st.tuples(st.integers(1, 1000), st.sampled_from(["s", "min", "h"])).map(
    lambda parts: f"{parts[0]}/{parts[1]}"
)
PERCENTAGES = st.one_of(st.integers(0, 100).map(lambda n: f"{n}%"), st.floats(0, 1))
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"])
RETRY_ON = st.sampled_from(["connect-error", "timeout", "reset", 502, 503, "500-599", "429"])


def _optional(**entries: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=entries)


@st.composite
def backoffs(draw: st.DrawFn) -> dict[str, Any]:
    low, high = sorted(draw(st.lists(st.integers(0, 5000), min_size=2, max_size=2)))
    extra = draw(
        _optional(
            multiplier=st.floats(1, 10).map(lambda f: round(f, 2)),
            jitter=st.sampled_from(["full", "none", "decorrelated"]),
        )
    )
    return {"initial": f"{low}ms", "max": f"{high}ms", **extra}


POLICIES = st.one_of(
    _optional(
        attempts=st.integers(1, 20),
        backoff=backoffs(),
        retry_on=st.lists(RETRY_ON, max_size=4),
        methods=st.lists(METHODS, min_size=1, max_size=3),
        per_try_timeout=DURATIONS,
        deadline=DURATIONS,
        budget=PERCENTAGES,
        respect_retry_after=st.booleans(),
        retry_non_idempotent=st.booleans(),
    ),
    st.fixed_dictionaries(
        {"plugin": st.just("examples.plugins:retry_on_teapot")},
        optional={"attempts": st.integers(1, 20)},
    ),
)

BUDGETS = st.one_of(
    st.fixed_dictionaries(
        {"rate": RATES},
        optional={
            "burst": st.integers(1, 100),
            "on_exceed": st.sampled_from(["reject", "wait"]),
            "max_wait": DURATIONS,
            "per": st.sampled_from(["client", "header:X-Api-Key"]),
        },
    ),
    st.just({"plugin": "examples.plugins:partner_allows"}),
)

TIMEOUTS = st.one_of(
    DURATIONS, _optional(connect=DURATIONS, read=DURATIONS, write=DURATIONS, pool=DURATIONS)
)


def upstreams(policies: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "timeout": TIMEOUTS,
        "pool": st.fixed_dictionaries(
            {"max_connections": st.integers(20, 200), "max_keepalive": st.integers(0, 20)}
        ),
        "headers": st.dictionaries(HEADER_NAMES, TEXT, max_size=3),
        "send": _optional(method=METHODS, path=st.sampled_from(["/send", "/v1/messages"])),
        "inbox": _optional(max_messages=st.integers(1, 10_000)),
        "breaker": _optional(failures=st.integers(1, 10), cooldown=DURATIONS),
    }
    if policies:
        optional["retry"] = st.sampled_from(policies)
    url = st.integers(1024, 65535).map(lambda port: f"http://127.0.0.1:{port}")
    return st.fixed_dictionaries({"url": url}, optional=optional)


@st.composite
def routes(
    draw: st.DrawFn, index: int, upstream_names: list[str], policies: list[str], tags: list[str]
) -> dict[str, Any]:
    shape = draw(
        st.sampled_from(["/r{i}", "/r{i}/{{p}}", "/r{i}/{{p:int}}/x", "/r{i}/{{rest:path}}"])
    )
    path = shape.format(i=index)
    route: dict[str, Any] = {"path": path}
    if tags and draw(st.booleans()):
        route["tag"] = draw(st.sampled_from(tags))
    upstream = draw(st.sampled_from(upstream_names))

    if draw(st.integers(0, 3)) == 0:
        route["methods"] = draw(st.lists(st.sampled_from(["POST", "PUT"]), min_size=1, max_size=2))
        route["deliver"] = {"upstream": upstream}
        return route

    route["methods"] = draw(st.lists(METHODS, min_size=1, max_size=3))
    forward: dict[str, Any] = {"upstream": upstream}
    parameter = "rest" if "rest" in path else "p" if "{p" in path else None
    if parameter is not None and draw(st.booleans()):
        forward["path"] = f"/up/{{{{ path.{parameter} }}}}"
    if draw(st.booleans()):
        forward["headers"] = {"X-Method": "{{ method }}", "X-Fixed": draw(PLAIN_TEXT)}
    if draw(st.booleans()):
        forward["query"] = {"q": "{{ query.q | default('') }}"}
    if policies and draw(st.booleans()):
        forward["retry"] = draw(st.sampled_from(policies))
    if draw(st.booleans()):
        forward["timeout"] = draw(DURATIONS)
    route["forward"] = forward
    return route


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid routes.yaml document as Python values."""
    policies = draw(st.dictionaries(NAMES, POLICIES, max_size=2))
    budgets = draw(st.dictionaries(NAMES, BUDGETS, max_size=2))
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    config: dict[str, Any] = {"version": 1}
    server = draw(
        _optional(
            max_body=SIZES,
            drain_timeout=DURATIONS,
            trusted_proxies=st.lists(st.sampled_from(["127.0.0.1", "10.0.0.0/8", "::1"])),
            workers=st.just(1),
        )
    )
    if server:
        config["server"] = server
    if policies:
        config["retry_policies"] = policies
    if budgets:
        config["throttles"] = budgets
    config["upstreams"] = {name: draw(upstreams(list(policies))) for name in names}
    count = draw(st.integers(0, 6))
    config["routes"] = [
        draw(routes(index, names, list(policies), list(budgets))) for index in range(count)
    ]
    return config


class CoreDumper(yaml.SafeDumper):
    """Quotes exactly the strings that the loader would not read back as strings."""


CoreDumper.yaml_implicit_resolvers = CoreSafeLoader.yaml_implicit_resolvers


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=CoreDumper, sort_keys=False, allow_unicode=True)
