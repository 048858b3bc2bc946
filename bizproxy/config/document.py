"""A parsed config file: plain values plus the place of every key and value in the text.

Every later stage (schema validation, cross-section checks) reports problems through a
`Document`, so each message points at the line and column of the value at fault and
never shows a value that came from the environment.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from bizproxy.errors import ConfigProblem, Severity

Key = str | int
KeyPath = tuple[Key, ...]

# Shorter environment values (a port, a count) are too common in messages to mask.
_SHORTEST_HIDDEN = 4

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class Mark(NamedTuple):
    """A place in the text, 1-based."""

    line: int
    column: int


START = Mark(1, 1)


def format_path(path: KeyPath) -> str:
    """Show a key path the way an operator reads it: routes[3].forward.upstream."""
    parts: list[str] = []
    for key in path:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _PLAIN_KEY.match(key):
            parts.append(f".{key}" if parts else key)
        else:
            parts.append(f"[{key!r}]")
    return "".join(parts)


def describe(value: object) -> str:
    """Show a value as YAML wrote it: strings quoted, containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass
class Document:
    """The values of one config file, where each came from, and what went wrong so far."""

    filename: str
    data: Any = None
    values: dict[KeyPath, Mark] = field(default_factory=dict)
    keys: dict[KeyPath, Mark] = field(default_factory=dict)
    substituted: dict[KeyPath, str] = field(default_factory=dict)
    aliases: dict[KeyPath, KeyPath] = field(default_factory=dict)
    """Where each alias's anchored value was written."""
    broken: set[KeyPath] = field(default_factory=set)
    """Values that could not be built; their problem is already recorded."""
    problems: list[ConfigProblem] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    """Every value taken from the environment; no message may contain one."""

    def mark(self, path: KeyPath, *, key: bool = False) -> Mark:
        """The place of the value (or its key) at `path`, else of its nearest ancestor."""
        table = self.keys if key else self.values
        found = table.get(path) or table.get(self.origin(path))
        if found is not None:
            return found
        for end in range(len(path) - 1, -1, -1):
            found = self.values.get(path[:end]) or self.keys.get(path[:end])
            if found is not None:
                return found
        return START

    def origin(self, path: KeyPath) -> KeyPath:
        """Where the value at `path` was written, following aliases to their anchors."""
        if not self.aliases:
            return path
        for _ in range(len(self.aliases) + 1):
            for end in range(len(path), 0, -1):
                anchor = self.aliases.get(path[:end])
                if anchor is not None:
                    path = (*anchor, *path[end:])
                    break
            else:
                return path
        return path

    def substituted_text(self, path: KeyPath) -> str | None:
        """The text as written, when the value at `path` holds environment values."""
        return self.substituted.get(path) or self.substituted.get(self.origin(path))

    def show(self, path: KeyPath, value: object) -> str:
        """Describe the value at `path` without revealing anything taken from the environment."""
        raw = self.substituted_text(path)
        if raw is not None:
            return f"{raw!r} (value not shown)"
        return describe(value)

    def add(
        self,
        path: KeyPath,
        message: str,
        *,
        key: bool = False,
        at: KeyPath | None = None,
        mark: Mark | None = None,
        severity: Severity = "error",
    ) -> None:
        """Record a problem about `path`, placed at `mark`, else at `at`, else at `path`."""
        if mark is None:
            mark = self.mark(path if at is None else at, key=key)
        self.problems.append(
            ConfigProblem(
                file=self.filename,
                line=mark.line,
                column=mark.column,
                path=format_path(path),
                message=message,
                severity=severity,
            )
        )

    def redacted_problems(self) -> list[ConfigProblem]:
        """The problems, each once, with any environment value that slipped in masked.

        Messages already show references instead of substituted values; this is the
        second line of defence, for text quoted from deep inside a value.
        """
        hidden = sorted((s for s in self.secrets if len(s) >= _SHORTEST_HIDDEN), key=len)
        problems: list[ConfigProblem] = []
        for problem in dict.fromkeys(self.problems):
            message = problem.message
            for secret in reversed(hidden):
                message = message.replace(secret, "***")
            problems.append(replace(problem, message=message))
        return problems

    def is_broken(self, path: KeyPath) -> bool:
        """True when the value at `path`, or one holding it, could not be built."""
        origin = self.origin(path)
        return any(
            path[:end] in self.broken or origin[:end] in self.broken
            for end in range(max(len(path), len(origin)) + 1)
        )

    def get(self, path: KeyPath) -> Any:
        """The value at `path`, or None when any step is missing or of another kind."""
        node = self.data
        for key in path:
            in_list = isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node)
            in_mapping = isinstance(key, str) and isinstance(node, dict) and key in node
            if not (in_list or in_mapping):
                return None
            node = node[key]
        return node
