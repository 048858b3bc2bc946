"""The package's public face and the examples that use it."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import bizproxy
from tests.support.servers import unused_port_url

ROOT = Path(__file__).resolve().parent.parent


def test_package_all_is_sorted_and_complete() -> None:
    """__all__ is sorted, every name resolves, and every public exception is exported."""
    assert bizproxy.__all__ == sorted(bizproxy.__all__)
    for name in bizproxy.__all__:
        assert getattr(bizproxy, name) is not None
    from bizproxy import errors

    public_errors = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert public_errors <= set(bizproxy.__all__)


def test_package_import_stays_light() -> None:
    """`import bizproxy` loads neither httpx nor FastAPI."""
    code = (
        "import sys, bizproxy; print(sorted(m for m in ('httpx', 'fastapi') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_business_examples_import_neither_httpx_nor_fastapi() -> None:
    """Business code in examples/ talks to upstreams through bizproxy only."""
    for path in (ROOT / "examples").glob("*.py"):
        if path.name in {"example_upstream.py", "__init__.py"}:
            continue
        assert not imported_modules(path) & {"httpx", "fastapi", "starlette"}, path.name


def test_example_send_and_receive_runs_against_the_example_upstream() -> None:
    """The send-and-receive example sends three messages and receives one."""
    url = unused_port_url()
    result = subprocess.run(
        [sys.executable, "-m", "examples.send_and_receive", "--start-upstream", "--url", url],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("sent order") == 3
    assert "received: {'event': 'payment.settled', 'order': 1}" in result.stdout
