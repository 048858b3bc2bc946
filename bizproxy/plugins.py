"""Plug-ins named in routes.yaml as `package.module:attribute`, imported and checked.

A plug-in module is looked up on `sys.path` first, then in the folders given (the
config file's folder), so a config can ship its plug-ins beside it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any


class PluginError(ValueError):
    """A plug-in path does not import, names nothing, or names something not callable."""


def resolve_plugin(
    spec: str, *, arguments: Sequence[str] = (), search_path: Sequence[Path] = ()
) -> Callable[..., Any]:
    """Import the callable `spec` names; with `arguments`, check that it accepts them."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise PluginError(
            f"expected a plug-in import path such as package.module:function, got {spec!r}"
        )

    module = _import(spec, module_name, search_path)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [name for name in dir(target) if not name.startswith("_")]
            raise PluginError(
                f"cannot find plug-in {spec!r}: {target.__name__!r} has no attribute {part!r}"
                + _suggest(part, names)
            )
        target = getattr(target, part)

    if not callable(target):
        kind = type(target).__name__
        raise PluginError(f"plug-in {spec!r} is not callable: it is of type {kind}")
    if arguments:
        _check_arguments(spec, target, arguments)
    plugin: Callable[..., Any] = target
    return plugin


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _import(spec: str, module_name: str, search_path: Sequence[Path]) -> ModuleType:
    try:
        return _import_module(module_name, search_path)
    except ModuleNotFoundError as err:
        raise PluginError(f"cannot import plug-in {spec!r}: no module named {err.name!r}") from err
    except Exception as err:
        raise PluginError(f"cannot import plug-in {spec!r}: {type(err).__name__}: {err}") from err


def _import_module(module_name: str, search_path: Sequence[Path]) -> ModuleType:
    top = module_name.partition(".")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != top or not search_path:
            raise
        found = importlib.machinery.PathFinder.find_spec(top, [str(p) for p in search_path])
        if found is None or found.loader is None:
            raise
    module = importlib.util.module_from_spec(found)
    sys.modules[top] = module
    try:
        found.loader.exec_module(module)
    except BaseException:
        del sys.modules[top]
        raise
    return importlib.import_module(module_name)


def _check_arguments(spec: str, target: Callable[..., Any], arguments: Sequence[str]) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # some builtins have no signature to check
    try:
        signature.bind(*(None for _ in arguments))
    except TypeError:
        wanted = ", ".join(arguments)
        raise PluginError(
            f"plug-in {spec!r} must accept ({wanted}), but its signature is {signature}"
        ) from None
