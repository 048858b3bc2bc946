"""``python -m bench.run``: bizproxy and two baseline forwarders under the same load.

Starts a static upstream (nginx, else built-in), a load generator (wrk, else built-in),
the baselines and, once ``bizproxy serve`` exists, bizproxy on 10- and 1,000-route files;
prints one row per target, scenario and route count, and writes the results as JSON under
bench/results/. See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace

from bench import report
from bench.harness import SCENARIOS, Results, Settings, run_benchmark, save
from bench.targets import KINDS
from bench.verdict import print_verdicts

COLUMNS = [
    "target",
    "scenario",
    "routes",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "peak RSS MiB",
    "x naive",
]


def table_rows(results: Results) -> list[list[object]]:
    order = {scenario.name: index for index, scenario in enumerate(SCENARIOS)}
    rows = sorted(
        results.rows,
        key=lambda row: (order[row["scenario"]], KINDS.index(row["target"]), row["routes"] or 0),
    )
    return [
        [
            row["target"],
            row["scenario"],
            row["routes"],
            row["rps"],
            row["p50_ms"],
            row["p99_ms"],
            row["errors"],
            row["peak_rss_mib"],
            row["ratio_to_naive"],
        ]
        for row in rows
    ]


def print_results(results: Results) -> None:
    settings = results.settings
    print(
        f"\n{settings.rounds} round(s) of {settings.duration_s:g} s per row, "
        f"{settings.connections} connections; req/s, p50 and p99 are medians over rounds."
    )
    print(report.table(COLUMNS, table_rows(results)))
    if any(row["scenario"] == "guarded-get" for row in results.rows):
        print("x naive for guarded-get is against the naive forwarder's plain get.")
    print_verdicts(results.rows)
    if results.check:
        check = results.check
        print(
            f"bizproxy check {check['file']}: {check['median_s'] * 1000:.0f} ms "
            f"(median of {len(check['exit_codes'])}, exit codes {check['exit_codes']})"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--connections", type=int, default=32, help="open connections (32)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--only", action="append", choices=KINDS, help="run only this target; repeatable"
    )
    parser.add_argument("--routes", default="10,1000", help="route counts for bizproxy")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, 10 routes")
    parser.add_argument("--python-load", action="store_true", help="use the built-in generator")
    parser.add_argument("--builtin-upstream", action="store_true", help="do not use nginx")
    parser.add_argument("--no-check", action="store_true", help="do not time bizproxy check")
    parser.add_argument(
        "--no-reload", action="store_true", help="do not measure reloads of the 1,000-route file"
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings(
        duration_s=args.duration,
        connections=args.connections,
        rounds=args.rounds,
        only=tuple(args.only or KINDS),
        route_counts=tuple(int(count) for count in args.routes.split(",")),
        scenarios=tuple(args.scenario or [scenario.name for scenario in SCENARIOS]),
        python_load=args.python_load,
        builtin_upstream=args.builtin_upstream,
        time_check=not args.no_check,
    )
    if args.quick:
        return replace(
            settings, duration_s=1.0, rounds=1, route_counts=(10,), warm_up_s=0.0, time_check=False
        )
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = run_benchmark(settings_from(args))
    print_results(results)
    if not results.rows:
        print("no target ran; nothing to compare.")
        return 1
    print(f"\nresults: {save(results)}")
    if not (args.no_reload or args.quick):
        # Reload-to-serving and the throughput dip, in a run of its own (bench/reload_bench.py).
        print("\nreloads of the 1,000-route file while serving:", flush=True)
        command = [sys.executable, "-m", "bench.reload_bench", "--reloads", "5"]
        subprocess.run(command, check=False, timeout=300)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
