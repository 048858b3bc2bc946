"""The config models: parsed values, defaults, and the invariants each section keeps."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import pydantic
import pytest

from bizproxy.config import LoadedConfig, RoutesConfig, load_config, load_config_text, summary
from bizproxy.units import Rate

FULL = """\
version: 1
server:
  max_body: 512KiB
  drain_timeout: 250ms
  trusted_proxies: [127.0.0.1, 10.0.0.0/8]
  admin_token: ""
throttle_store: {redis: "redis://127.0.0.1:6379/0", on_failure: closed}
retry_policies:
  standard:
    attempts: 4
    backoff: {initial: 100ms, max: 2s, multiplier: 1.5, jitter: decorrelated}
    retry_on: [connect-error, 503, "500-599", "429"]
    methods: [get, put]
    per_try_timeout: 2s
    budget: 20%
  custom:
    plugin: examples.plugins:retry_on_teapot
    attempts: 2
throttles:
  checkout: {rate: 20/s, burst: 40}
  reports: {rate: 100/min, on_exceed: wait, max_wait: 5s}
  per_client: {rate: 2.5/s, per: "header:X-Api-Key"}
  partner: {plugin: examples.plugins:partner_allows}
upstreams:
  orders:
    url: https://127.0.0.1:9001/base
    timeout: 10s
    retry: standard
    sign: {secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
    breaker: {failures: 3, cooldown: 1m}
  reports:
    url: http://127.0.0.1:9002
    timeout: {connect: 1s, read: 20s}
routes:
  - path: /api/orders/{order_id}
    methods: [get, HEAD]
    tag: checkout
    forward:
      upstream: orders
      path: "/v2/orders/{{ path.order_id }}"
      timeout: 5s
  - path: /files/{rest:path}
    forward: {upstream: reports, retry: custom}
  - path: /hooks/github
    methods: [POST]
    verify: {scheme: hmac-sha256, secret: s3cret, header: X-Hub-Signature-256, prefix: "sha256="}
    deliver: {upstream: orders}
"""


@pytest.fixture
def full(tmp_path: Path) -> LoadedConfig:
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "plugins.py").write_text(
        "def retry_on_teapot(exception, attempt):\n    return False\n\n"
        "def partner_allows(tag):\n    return True\n"
    )
    return load_config_text(FULL, filename="routes.yaml", base_dir=tmp_path, environ={})


def test_models_hold_parsed_units(full: LoadedConfig) -> None:
    """Durations are seconds, sizes bytes, rates Rate values and percentages fractions."""
    model = full.model
    assert model.server.max_body == 512 * 1024
    assert model.server.drain_timeout == 0.25
    policy = model.retry_policies["standard"]
    assert (policy.backoff.initial, policy.backoff.max, policy.per_try_timeout) == (0.1, 2.0, 2.0)
    assert policy.budget == pytest.approx(0.2)
    assert model.throttles["reports"].rate == Rate(count=100, period_seconds=60)  # type: ignore[union-attr]
    assert model.upstreams["orders"].breaker.cooldown == 60.0  # type: ignore[union-attr]


def test_models_normalise_methods_and_retry_conditions(full: LoadedConfig) -> None:
    """Methods are upper-cased; statuses are ints and ranges stay as written."""
    policy = full.model.retry_policies["standard"]
    assert policy.methods == ("GET", "PUT")
    assert policy.retry_on == ("connect-error", 503, "500-599", 429)
    assert full.model.routes[0].methods == ("GET", "HEAD")


def test_models_spread_a_single_timeout_over_every_phase(full: LoadedConfig) -> None:
    """timeout: 10s sets connect, read, write and pool; a mapping keeps the other defaults."""
    orders = full.model.upstreams["orders"].timeout
    assert (orders.connect, orders.read, orders.write, orders.pool) == (10.0, 10.0, 10.0, 10.0)
    reports = full.model.upstreams["reports"].timeout
    assert (reports.connect, reports.read, reports.write, reports.pool) == (1.0, 20.0, 30.0, 5.0)


def test_models_fill_defaults(full: LoadedConfig) -> None:
    """Unset keys take their documented defaults."""
    reports = full.model.upstreams["reports"]
    assert (reports.pool.max_connections, reports.pool.max_keepalive) == (100, None)
    assert (reports.send.method, reports.send.path, reports.inbox.max_messages) == (
        "POST",
        "/send",
        1000,
    )
    assert reports.retry is None and reports.breaker is None and reports.sign is None
    assert full.model.routes[1].methods == ("GET",)
    assert full.model.throttles["checkout"].on_exceed == "reject"  # type: ignore[union-attr]


def test_models_read_trusted_proxies_as_networks(full: LoadedConfig) -> None:
    """Addresses and CIDRs become networks; an empty admin token means none."""
    assert full.model.server.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert full.model.server.admin_token is None


def test_models_pick_store_budget_and_verify_kinds(full: LoadedConfig) -> None:
    """The redis store, plug-in budgets and the hmac verify scheme are told apart by shape."""
    model = full.model
    assert model.throttle_store.on_failure == "closed"  # type: ignore[union-attr]
    assert type(model.throttles["partner"]).__name__ == "PluginBudgetConfig"
    assert model.throttles["per_client"].capacity == 3  # type: ignore[union-attr]
    assert model.throttles["checkout"].capacity == 40  # type: ignore[union-attr]
    verify = model.routes[2].verify
    assert verify is not None and verify.scheme == "hmac-sha256"
    assert verify.secret.get_secret_value() == "s3cret"


def test_loaded_config_carries_resolved_plugins(full: LoadedConfig) -> None:
    """Each plug-in path maps to its callable, imported from beside the config."""
    assert sorted(full.plugins) == [
        "examples.plugins:partner_allows",
        "examples.plugins:retry_on_teapot",
    ]
    assert full.plugins["examples.plugins:partner_allows"]("partner") is True


def test_models_keep_secrets_out_of_reprs(full: LoadedConfig) -> None:
    """Secrets, Redis URLs and header values do not appear in reprs."""
    text = repr(full.model)
    assert "whsec_" not in text and "s3cret" not in text and "redis://" not in text
    sign = full.model.upstreams["orders"].sign
    assert sign is not None
    assert sign.key() == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_models_are_frozen_and_closed() -> None:
    """Models refuse assignment and unknown keys."""
    model = RoutesConfig.model_validate({"version": 1})
    with pytest.raises(pydantic.ValidationError):
        model.version = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        RoutesConfig.model_validate({"version": 1, "extra": True})


def test_route_path_params_lists_names_and_types(full: LoadedConfig) -> None:
    """path_params gives each parameter's name and type."""
    assert full.model.routes[0].path_params == {"order_id": "str"}
    assert full.model.routes[1].path_params == {"rest": "path"}


def test_the_whole_vocabulary_loads() -> None:
    """The reference example using every section and key loads and counts as expected."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    environ = {"ORDERS_SIGNING_SECRET": secret, "PAYMENTS_WEBHOOK_SECRET": secret}
    loaded = load_config(Path(__file__).parent / "vocabulary" / "routes.yaml", environ=environ)
    assert summary(loaded).endswith("1 upstream, 3 routes, 2 retry policies, 4 throttle budgets")
    assert loaded.model.server.admin_token is None
    forward = loaded.model.routes[0].forward
    assert forward is not None and forward.query == {"include": "{{ query.include }}"}
