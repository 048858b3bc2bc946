"""The command line: the only layer that configures logging and chooses exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bizproxy import __version__

_CHECK_EPILOG = """\
exit status: 0 when every file is valid (warnings allowed), 1 when any file is invalid,
2 on a usage error or when a file cannot be read.

--format json prints one object:
  {"valid": bool,
   "files": [{"file", "valid", "readable", "summary", "error"}, ...],
   "problems": [{"file", "line", "column", "path", "message", "severity"}, ...]}
--format github prints ::error and ::warning workflow annotations.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bizproxy", description="A declarative, config-driven routing proxy."
    )
    parser.add_argument("--version", action="version", version=f"bizproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate config files without serving them",
        description="Validate config files: every problem, each at its file:line:col.",
        epilog=_CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("files", nargs="*", default=["routes.yaml"], metavar="FILE")
    check.add_argument("--format", choices=("text", "json", "github"), default="text")

    commands.add_parser(
        "schema",
        help="print the JSON Schema of routes.yaml",
        description="Print the JSON Schema of routes.yaml, generated from the config models.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "check":
        return _check(args.files, args.format)
    if args.command == "schema":
        return _schema()
    return 0


def _check(files: Sequence[str], output_format: str) -> int:
    from bizproxy.config import report

    reports = [report.check_file(file) for file in files]
    if output_format == "json":
        sys.stdout.write(report.format_json(reports))
    elif output_format == "github":
        sys.stdout.write(report.format_github(reports))
    else:
        sys.stdout.write(report.format_text(reports))
        for unreadable in reports:
            if unreadable.read_error is not None:
                print(f"bizproxy check: {unreadable.read_error}", file=sys.stderr)
    return report.exit_code(reports)


def _schema() -> int:
    from bizproxy.config.schema import render_schema

    sys.stdout.write(render_schema())
    return 0
