"""The command line: the only layer that configures logging and chooses exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

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

    serve = commands.add_parser(
        "serve",
        help="serve a config, reloading it when it changes",
        description="Serve the routes of a config with uvicorn; reload on edits and SIGHUP.",
    )
    serve.add_argument("file", nargs="?", default="routes.yaml", metavar="FILE")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8080)
    serve.add_argument("--no-watch", action="store_true", help="reload only on SIGHUP")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="worker processes (default: server.workers of the config, else 1)",
    )
    serve.add_argument(
        "--poll", action="store_true", help="poll for changes (for mounts without events)"
    )
    _add_logging_options(serve)

    diff = commands.add_parser(
        "diff",
        help="summarise what changes between two configs",
        description="Print what a reload from OLD to NEW would change, as the server logs it.",
    )
    diff.add_argument("old", metavar="OLD")
    diff.add_argument("new", metavar="NEW")

    routes = commands.add_parser(
        "routes",
        help="print the route table of a config",
        description="Print method, path, target, tag, retry policy and budget of each route.",
    )
    routes.add_argument("file", nargs="?", default="routes.yaml", metavar="FILE")
    return parser


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return port


def _positive(text: str) -> int:
    number = int(text) if text.isdigit() else 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return number


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log one line per request: route, upstream, status, duration, request id",
    )


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
    if args.command == "serve":
        return _serve(args)
    if args.command == "diff":
        return _diff(args.old, args.new)
    if args.command == "routes":
        return _routes(args.file)
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


def _load_or_report(file: str) -> Any:
    """Load a config for a command; print its problems and return the exit code instead."""
    from bizproxy.config import load_config
    from bizproxy.errors import ConfigError

    try:
        return load_config(file)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 1
    except OSError as error:
        print(f"bizproxy: cannot read {file}: {error.strerror or error}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    import logging

    from bizproxy.logs import configure_logging

    configure_logging(args.log_level, args.log_format, access_log=args.access_log)
    loaded = _load_or_report(args.file)
    if isinstance(loaded, int):
        return loaded
    for warning in loaded.warnings:
        logging.getLogger("bizproxy").warning("%s", warning)
    watch = not args.no_watch
    workers = args.workers or loaded.model.server.workers
    if workers > 1:
        from bizproxy.config.models import RedisStoreConfig
        from bizproxy.runtime import serve_workers

        if not isinstance(loaded.model.throttle_store, RedisStoreConfig):
            logging.getLogger("bizproxy").warning(
                "%d workers with the memory throttle store: each worker keeps its own "
                "budgets, so a budget admits up to %d times its rate; use "
                "throttle_store: {redis: ...} to share them",
                workers,
                workers,
            )
        serve_workers(
            args.file,
            host=args.host,
            port=args.port,
            workers=workers,
            watch=watch,
            force_polling=args.poll,
            logging_options=(args.log_level, args.log_format, args.access_log),
        )
        return 0

    import uvloop

    from bizproxy.runtime import gateway_from_loaded, serve

    gateway = gateway_from_loaded(args.file, loaded)
    uvloop.run(serve(gateway, host=args.host, port=args.port, watch=watch, force_polling=args.poll))
    return 0


def _diff(old_file: str, new_file: str) -> int:
    from bizproxy.diff import describe_changes

    old = _load_or_report(old_file)
    if isinstance(old, int):
        return old
    new = _load_or_report(new_file)
    if isinstance(new, int):
        return new
    lines = describe_changes(old.model, new.model)
    for line in lines or ["no changes to routes, upstreams or policies"]:
        print(line)
    return 0


def _routes(file: str) -> int:
    from bizproxy.config.routes_view import route_rows

    loaded = _load_or_report(file)
    if isinstance(loaded, int):
        return loaded
    rows = [("METHODS", "PATH", "TARGET", "TAG", "RETRY", "BUDGET"), *route_rows(loaded.model)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
