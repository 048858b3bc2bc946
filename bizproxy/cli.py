"""The command line: the only layer that configures logging and chooses exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bizproxy import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bizproxy", description="A declarative, config-driven routing proxy."
    )
    parser.add_argument("--version", action="version", version=f"bizproxy {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0
