"""What `bizproxy check` reports about each file, in text, JSON or GitHub annotations.

JSON output is one object, keys in this order:

    {"valid": bool,                  every file readable and free of errors
     "files": [{"file", "valid", "readable", "summary", "error"}, ...],
     "problems": [{"file", "line", "column", "path", "message", "severity"}, ...]}

`summary` is the one-line summary of a valid file, else null; `error` says why an
unreadable file could not be read, else null. Problems are sorted by file, line and
column; `severity` is "error" or "warning", and warnings do not make a file invalid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bizproxy.config.loader import LoadedConfig, load_config, summary
from bizproxy.errors import ConfigError, ConfigProblem


@dataclass(frozen=True)
class FileReport:
    """The outcome of checking one file."""

    file: str
    loaded: LoadedConfig | None = None
    problems: tuple[ConfigProblem, ...] = ()
    read_error: str | None = None

    @property
    def readable(self) -> bool:
        return self.read_error is None

    @property
    def valid(self) -> bool:
        return self.loaded is not None


def check_file(file: str, *, environ: Mapping[str, str] | None = None) -> FileReport:
    """Load one file the way `serve` would, and keep what went wrong."""
    try:
        loaded = load_config(file, environ=environ)
    except ConfigError as err:
        return FileReport(file, problems=tuple(err.problems))
    except OSError as err:
        reason = err.strerror or str(err)
        return FileReport(file, read_error=f"cannot read {file!r}: {reason}")
    return FileReport(file, loaded=loaded, problems=loaded.warnings)


def format_text(reports: Sequence[FileReport]) -> str:
    lines: list[str] = []
    for report in reports:
        if report.read_error is not None:
            continue
        lines.extend(str(problem) for problem in report.problems)
        if report.loaded is not None:
            lines.append(summary(report.loaded))
        else:
            count = sum(1 for p in report.problems if p.severity == "error")
            lines.append(f"{report.file}: invalid, {count} {'error' if count == 1 else 'errors'}")
    return "".join(f"{line}\n" for line in lines)


def format_json(reports: Sequence[FileReport]) -> str:
    files = [
        {
            "file": report.file,
            "valid": report.valid,
            "readable": report.readable,
            "summary": summary(report.loaded) if report.loaded is not None else None,
            "error": report.read_error,
        }
        for report in reports
    ]
    problems = [
        {
            "file": problem.file,
            "line": problem.line,
            "column": problem.column,
            "path": problem.path,
            "message": problem.message,
            "severity": problem.severity,
        }
        for report in reports
        for problem in report.problems
    ]
    valid = all(report.valid for report in reports)
    return json.dumps({"valid": valid, "files": files, "problems": problems}, indent=2) + "\n"


def format_github(reports: Sequence[FileReport]) -> str:
    lines: list[str] = []
    for report in reports:
        if report.read_error is not None:
            lines.append(f"::error file={_property(report.file)}::{_data(report.read_error)}")
            continue
        for problem in report.problems:
            place = f"file={_property(problem.file)},line={problem.line},col={problem.column}"
            text = f"{problem.path}: {problem.message}" if problem.path else problem.message
            lines.append(f"::{problem.severity} {place}::{_data(text)}")
        if report.loaded is not None:
            lines.append(summary(report.loaded))
    return "".join(f"{line}\n" for line in lines)


def exit_code(reports: Sequence[FileReport]) -> int:
    """0 when every file is valid, 1 when any is invalid, 2 when any cannot be read."""
    if any(not report.readable for report in reports):
        return 2
    return 0 if all(report.valid for report in reports) else 1


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")
