"""`bizproxy check` and `bizproxy schema`, run as a user runs them: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).parent / "broken"


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("ORDERS_")}
    environ["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "bizproxy", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_accepts_the_bundled_config_by_default() -> None:
    """With no file named, check reads routes.yaml, prints its summary and exits 0."""
    result = _run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "routes.yaml: 1 upstream, 3 routes, 1 retry policy, 1 throttle budget\n"


def test_check_exits_one_and_prints_located_problems() -> None:
    """An invalid file exits 1 with each problem on its own file:line:col line."""
    result = _run("check", "unknown_upstream.yaml", cwd=BROKEN)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "unknown_upstream.yaml:7:25: routes[0].forward.upstream: unknown upstream 'order'; "
        "did you mean 'orders'?",
        "unknown_upstream.yaml: invalid, 1 error",
    ]


def test_check_exits_zero_with_warnings() -> None:
    """Warnings are printed but do not fail the check."""
    result = _run("check", "workers_memory.yaml", cwd=BROKEN)
    assert result.returncode == 0
    assert "server.workers: warning: 4 workers" in result.stdout
    assert result.stdout.endswith(
        "workers_memory.yaml: 0 upstreams, 0 routes, 0 retry policies, 0 throttle budgets\n"
    )


def test_check_exits_two_for_a_missing_file() -> None:
    """A file that cannot be read exits 2, even next to an invalid one."""
    result = _run("check", "absent.yaml", "unknown_upstream.yaml", cwd=BROKEN)
    assert result.returncode == 2
    assert "bizproxy check: cannot read 'absent.yaml': No such file or directory" in result.stderr
    assert "unknown upstream 'order'" in result.stdout


def test_check_exits_two_for_a_usage_error() -> None:
    """An unknown option is a usage error."""
    result = _run("check", "--format", "xml")
    assert result.returncode == 2
    assert "invalid choice: 'xml'" in result.stderr


def test_check_json_output_is_one_stable_object() -> None:
    """--format json prints validity per file and every problem with its place."""
    result = _run(
        "check", "--format", "json", "bad_duration.yaml", "workers_memory.yaml", cwd=BROKEN
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert list(report) == ["valid", "files", "problems"]
    assert report["valid"] is False
    assert report["files"] == [
        {
            "file": "bad_duration.yaml",
            "valid": False,
            "readable": True,
            "summary": None,
            "error": None,
        },
        {
            "file": "workers_memory.yaml",
            "valid": True,
            "readable": True,
            "summary": "workers_memory.yaml: 0 upstreams, 0 routes, 0 retry policies, "
            "0 throttle budgets",
            "error": None,
        },
    ]
    assert report["problems"][0] == {
        "file": "bad_duration.yaml",
        "line": 7,
        "column": 24,
        "path": "retry_policies.standard.backoff.initial",
        "message": "expected a duration such as 250ms or 2s, got '100 msec'",
        "severity": "error",
    }
    assert report["problems"][1]["severity"] == "warning"


def test_check_github_output_is_workflow_annotations() -> None:
    """--format github prints ::error and ::warning lines with file, line and col."""
    result = _run("check", "--format", "github", "several/routes.yaml", cwd=BROKEN.parent)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "::warning file=several/routes.yaml,line=5,col=12::server.workers: 2 workers"
    )
    assert (
        "::error file=several/routes.yaml,line=41,col=15::routes[3].forward.upstream: "
        "unknown upstream 'order'; did you mean 'orders'?"
    ) in lines


@pytest.mark.parametrize("output_format", ["text", "json", "github"])
def test_check_never_prints_substituted_values(output_format: str) -> None:
    """No output format shows a value taken from the environment."""
    environ = {"ORDERS_TIMEOUT": "hunter2-timeout", "ORDERS_NAME": "hunter2-name"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bizproxy",
            "check",
            "--format",
            output_format,
            "secret_not_shown.yaml",
        ],
        cwd=BROKEN,
        env={**os.environ, **environ, "ORDERS_TOKEN": "hunter2", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "hunter2" not in result.stdout + result.stderr
    assert "${ORDERS_TIMEOUT}" in result.stdout


def test_schema_prints_the_committed_schema() -> None:
    """bizproxy schema prints exactly schemas/routes.schema.json."""
    result = _run("schema")
    assert result.returncode == 0
    assert result.stdout == (REPO / "schemas" / "routes.schema.json").read_text(encoding="utf-8")
