"""Load routes.yaml: parse, substitute `${NAME}`, validate every section and what it names.

The library raises and never prints: `load_config` returns a `LoadedConfig` or raises
`ConfigError` holding every problem found in one pass, each placed at the value at
fault. A file that cannot be read at all raises `OSError`, so callers can tell "no
config" from "a bad config".
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bizproxy.config.document import Document, Mark, describe
from bizproxy.config.models import RoutesConfig
from bizproxy.config.translate import add_validation_problems
from bizproxy.config.validate import check_document, is_template_path
from bizproxy.config.yaml_tree import parse_document
from bizproxy.errors import ConfigError, ConfigProblem


@dataclass(frozen=True)
class LoadedConfig:
    """A valid config, the files it was built from, and what it loaded from them."""

    path: Path
    model: RoutesConfig
    files: tuple[Path, ...]
    """The config and every file it references (some may not exist yet), for a watcher."""
    content_hash: str
    """sha256 over the config's and its referenced files' bytes."""
    warnings: tuple[ConfigProblem, ...]
    source_text: str = field(repr=False)
    schemas: Mapping[Path, Any] = field(default_factory=dict, repr=False)
    """Each route's parsed `body_schema`, keyed by the resolved path the model holds."""
    plugins: Mapping[str, Callable[..., Any]] = field(default_factory=dict, repr=False)
    """Each plug-in callable, keyed by its import path as written."""


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Load and check a config file; raise ConfigError listing every problem."""
    config_path = Path(path)
    raw = config_path.read_bytes()
    filename = os.fspath(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            [ConfigProblem(filename, line, column, "", "the file is not UTF-8 text")]
        ) from None
    return _load(text, raw, filename, config_path.resolve(), environ)


def load_config_text(
    text: str,
    *,
    filename: str,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Check config text as if read from `base_dir / filename`; raise ConfigError if invalid."""
    return _load(text, text.encode(), filename, (Path(base_dir) / filename).resolve(), environ)


def summary(loaded: LoadedConfig) -> str:
    """One line that says what a valid config holds."""
    model = loaded.model
    counts = [
        _count(len(model.upstreams), "upstream"),
        _count(len(model.routes), "route"),
        _count(len(model.retry_policies), "retry policy", "retry policies"),
        _count(len(model.throttles), "throttle budget"),
    ]
    return f"{loaded.path}: {', '.join(counts)}"


def _count(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _load(
    text: str,
    raw: bytes,
    filename: str,
    config_file: Path,
    environ: Mapping[str, str] | None,
) -> LoadedConfig:
    environ = os.environ if environ is None else environ
    base_dir = config_file.parent
    document = parse_document(
        text, filename=filename, environ=environ, template_paths=is_template_path
    )
    if document.problems and document.data is None:
        raise ConfigError(document.redacted_problems())

    model = _validate(document, base_dir)
    resources = check_document(document, base_dir=base_dir)
    problems = document.redacted_problems()
    if model is None or any(p.severity == "error" for p in problems):
        raise ConfigError(problems)

    files = (config_file, *dict.fromkeys(resources.files))
    return LoadedConfig(
        path=Path(filename),
        model=model,
        files=files,
        content_hash=_content_hash(raw, files[1:]),
        warnings=tuple(sorted(problems)),
        source_text=text,
        schemas=resources.schemas,
        plugins=resources.plugins,
    )


def _validate(document: Document, base_dir: Path) -> RoutesConfig | None:
    if document.data is None:
        message = "the file is empty; expected a mapping that starts with 'version: 1'"
        document.add((), message, mark=Mark(1, 1))
        return None
    if not isinstance(document.data, dict):
        document.add((), f"expected a mapping at the top level, got {describe(document.data)}")
        return None
    try:
        return RoutesConfig.model_validate(document.data, context={"base_dir": base_dir})
    except ValidationError as err:
        add_validation_problems(err, document, RoutesConfig)
        return None


def _content_hash(config: bytes, referenced: tuple[Path, ...]) -> str:
    digest = hashlib.sha256(config)
    for path in referenced:
        digest.update(b"\0" + os.fsencode(path) + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0missing")
    return digest.hexdigest()
