"""`bizproxy check` on retry and throttle settings: warnings and load-time plug-in checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bizproxy.cli import main

BASE = """
version: 1
server: {{workers: {workers}}}
throttle_store: {store}
throttles:
  partner: {{plugin: "{plugin}"}}
"""


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], **values: object) -> tuple[int, str]:
    settings: dict[str, object] = {
        "workers": 1,
        "store": "memory",
        "plugin": "examples.plugins:partner_allows",
    }
    settings.update(values)
    path = tmp_path / "routes.yaml"
    path.write_text(BASE.format(**settings))
    code = main(["check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_check_warns_of_several_workers_on_the_memory_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four workers with memory budgets pass, with a warning that each keeps its own."""
    code, output = check(tmp_path, capsys, workers=4)

    assert code == 0
    assert "server.workers: warning: 4 workers each keep their own memory throttle" in output
    assert "throttle_store: {redis: URL}" in output


@pytest.mark.parametrize(
    ("workers", "store"), [(1, "memory"), (4, '{redis: "redis://127.0.0.1:1/0"}')]
)
def test_check_is_quiet_with_one_worker_or_a_shared_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: int, store: str
) -> None:
    """One worker, or a Redis store shared by all, gives no workers warning."""
    code, output = check(tmp_path, capsys, workers=workers, store=store)

    assert code == 0
    assert "workers" not in output


def test_check_refuses_a_throttle_plugin_with_the_wrong_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A throttle plug-in must take (tag): a retry callable named there fails at load time."""
    code, output = check(tmp_path, capsys, plugin="examples.plugins:retry_on_teapot")

    assert code == 1
    assert "must accept (tag)" in output
    assert "throttles.partner.plugin" in output


def test_check_refuses_a_plugin_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt plug-in name is an error at load time that suggests the nearest name."""
    code, output = check(tmp_path, capsys, plugin="examples.plugins:partner_allow")

    assert code == 1
    assert "did you mean 'partner_allows'?" in output
