"""The broken-config corpus: each file states the exact problems it must produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from bizproxy.config import load_config
from bizproxy.errors import ConfigError

HERE = Path(__file__).parent
BROKEN = HERE / "broken"
CASES = sorted(BROKEN.glob("*.yaml"))
ENVIRON = {"ORDERS_TIMEOUT": "ten seconds", "ORDERS_TOKEN": "hunter2", "ORDERS_NAME": "ordrs"}


def _expected(path: Path) -> list[str]:
    prefix = "# expect: "
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def _reported(name: str) -> list[str]:
    try:
        loaded = load_config(name, environ=ENVIRON)
    except ConfigError as err:
        return [str(problem) for problem in err.problems]
    return [str(warning) for warning in loaded.warnings]


@pytest.mark.parametrize("path", CASES, ids=lambda path: path.stem)
def test_loader_reports_each_broken_config_exactly(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each broken config yields exactly the file:line:col: path: message lines it expects."""
    monkeypatch.chdir(BROKEN)
    expected = _expected(path)
    assert expected, f"{path.name} states no expected problems"
    assert _reported(path.name) == expected


def test_loader_reports_every_problem_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """One file with problems in several sections reports all of them, sorted by place."""
    monkeypatch.chdir(HERE / "several")
    with pytest.raises(ConfigError) as caught:
        load_config("routes.yaml", environ={})
    reported = [str(problem) for problem in caught.value.problems]
    assert reported == [
        "routes.yaml:5:12: server.workers: warning: 2 workers each keep their own memory "
        "throttle budgets, so a budget admits up to 2 times its rate; use throttle_store: "
        "{redis: URL} to share them",
        "routes.yaml:12:14: retry_policies.standard.backoff.initial: expected a duration such "
        "as 250ms or 2s, got '100 msec'",
        "routes.yaml:17:12: upstreams.orders.retry: unknown retry policy 'standrd'; "
        "did you mean 'standard'?",
        "routes.yaml:18:5: upstreams.orders.timeot: unknown key 'timeot'; did you mean 'timeout'?",
        "routes.yaml:28:8: routes[1].tag: unknown tag 'checkot'; did you mean 'checkout'?",
        "routes.yaml:30:9: routes[2].path: GET /api/orders/{id} collides with routes[0] on "
        "line 20 (/api/orders/{order_id}), which matches the same requests",
        "routes.yaml:34:11: routes[2].forward.path: template reads path.nope, but route path "
        "'/api/orders/{id}' has no parameter 'nope'",
        "routes.yaml:37:16: routes[3].body_schema: schema file 'missing.json' does not exist "
        "(a relative path starts at the config file's folder)",
        "routes.yaml:41:15: routes[3].forward.upstream: unknown upstream 'order'; "
        "did you mean 'orders'?",
    ]


def test_config_error_message_lists_errors_but_not_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ConfigError text counts and lists the errors; warnings stay in `problems`."""
    monkeypatch.chdir(HERE / "several")
    with pytest.raises(ConfigError) as caught:
        load_config("routes.yaml", environ={})
    message = str(caught.value)
    assert message.startswith("invalid config: 8 problems\n")
    assert "warning" not in message
    assert len(caught.value.problems) == 9


def test_loader_never_shows_substituted_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems about values taken from the environment show the reference, not the value."""
    monkeypatch.chdir(BROKEN)
    environ = {"ORDERS_TIMEOUT": "s3cr3t-timeout", "ORDERS_NAME": "s3cr3t-name"}
    with pytest.raises(ConfigError) as caught:
        load_config("secret_not_shown.yaml", environ={**environ, "ORDERS_TOKEN": "s3cr3t"})
    text = str(caught.value) + repr(caught.value.problems)
    assert "s3cr3t" not in text
    assert "'${ORDERS_TIMEOUT}' (value not shown)" in text
