"""Plug-in import paths: found on sys.path or beside the config, checked before use."""

from __future__ import annotations

from pathlib import Path

import pytest

from bizproxy.plugins import PluginError, resolve_plugin


def test_resolve_plugin_imports_a_callable() -> None:
    """A module:attribute path gives the callable it names."""
    found = resolve_plugin("examples.plugins:retry_on_teapot", arguments=("exception", "attempt"))

    class Teapot(Exception):
        status = 418

    assert found(Teapot(), 1) is True
    assert found(ValueError(), 1) is False


def test_resolve_plugin_searches_the_given_folders(tmp_path: Path) -> None:
    """A module that is not on sys.path is found in the search folders."""
    (tmp_path / "beside_config_plugins.py").write_text("def allow(tag):\n    return tag == 'a'\n")
    found = resolve_plugin("beside_config_plugins:allow", search_path=(tmp_path,))
    assert found("a") is True


def test_resolve_plugin_reports_import_failures(tmp_path: Path) -> None:
    """A module that raises on import is reported with the exception it raised."""
    (tmp_path / "exploding_plugins.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="RuntimeError: boom"):
        resolve_plugin("exploding_plugins:x", search_path=(tmp_path,))


def test_resolve_plugin_names_what_is_wrong() -> None:
    """Missing modules, attributes, non-callables and wrong signatures are told apart."""
    with pytest.raises(PluginError, match="no module named 'nowhere_at_all'"):
        resolve_plugin("nowhere_at_all:f")
    with pytest.raises(PluginError, match="did you mean 'partner_allows'"):
        resolve_plugin("examples.plugins:partner_allow")
    with pytest.raises(PluginError, match="not callable"):
        resolve_plugin("examples.plugins:os")  # a module attribute, not a function
    with pytest.raises(PluginError, match=r"must accept \(exception, attempt\)"):
        resolve_plugin("examples.plugins:partner_allows", arguments=("exception", "attempt"))
    with pytest.raises(PluginError, match="expected a plug-in import path"):
        resolve_plugin("examples.plugins")
