"""Which transport should sit under ``httpx.AsyncClient``: figures and behaviour checks.

``python -m bench.transports`` starts the static upstream, then for each round, concurrency
and candidate runs one child process (``bench.transport_candidates``) pinned to its own
core, interleaved A B C A B C. It prints req/s, p50 and p99 per candidate with the ratio to
httpx's default transport, then whether each transport keeps timeouts, pool limits and
streaming. Plain ``aiohttp.ClientSession`` is measured in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs, report
from bench.transport_candidates import (
    BASELINE,
    CANDIDATES,
    DIRECT_PREFIX,
    REFERENCE,
    SEND_CANDIDATE,
)
from bench.upstream import static_upstream

REPO = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Candidate:
    name: str
    python: str


def _importable(python: str, module: str) -> bool:
    probe = (
        f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    )
    return subprocess.run([python, "-c", probe], cwd=REPO, check=False).returncode == 0


def choose_candidates(args: argparse.Namespace) -> list[Candidate]:
    """Candidates that can run, each with its interpreter; say why the others are skipped."""
    chosen = []
    wanted = args.only.split(",") if args.only else list(CANDIDATES)
    for name in wanted:
        module, package = CANDIDATES[name]
        python = args.python
        if name.endswith("-nosniffio"):
            if not args.python_without_sniffio:
                print(f"skip {name}: pass --python-without-sniffio PATH (see bench/README.md)")
                continue
            python = args.python_without_sniffio
            if _importable(python, "sniffio"):
                print(f"skip {name}: sniffio is importable in {python}")
                continue
        if not _importable(python, module):
            print(f"skip {name}: {module} is not importable in {python} (pip install {package})")
            continue
        chosen.append(Candidate(name, python))
    return chosen


def run_child(
    candidate: Candidate, extra: list[str], cores: frozenset[int] | None, loop: str
) -> dict[str, Any]:
    argv = [candidate.python, "-m", "bench.transport_candidates", candidate.name]
    argv += [*extra, "--loop", loop]
    done = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        preexec_fn=procs.pinner(cores),
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(
    candidates: list[Candidate], url: str, args: argparse.Namespace, cores: frozenset[int] | None
) -> dict[int, dict[str, list[dict[str, Any]]]]:
    runs: dict[int, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    levels = [int(level) for level in args.concurrency.split(",")]
    for round_index in range(args.rounds):
        for concurrency in levels:
            for candidate in candidates:
                extra = ["--url", url + "/static/1", "--requests", str(args.requests)]
                extra += ["--max-seconds", str(args.max_seconds)]
                extra += ["--concurrency", str(concurrency)]
                result = run_child(candidate, extra, cores, args.loop)
                runs[concurrency][candidate.name].append(result)
                label = f"round {round_index + 1} C={concurrency:<4} {candidate.name:<24}"
                print(label, _brief(result), flush=True)
    return runs


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "error: " + str(result["error"])
    return (
        f"{result['rps']:,.0f} req/s  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms"
    )


def summarise(runs: dict[int, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Median over rounds per candidate and concurrency, with the ratio to httpx's default."""
    rows = []
    for concurrency, by_name in runs.items():
        medians = {}
        for name, results in by_name.items():
            good = [result for result in results if "error" not in result]
            rps = [result["rps"] for result in good]
            medians[name] = {
                "candidate": name,
                "concurrency": concurrency,
                "rounds": len(good),
                "rps": report.median(rps),
                "rps_min": min(rps, default=0.0),
                "rps_max": max(rps, default=0.0),
                "p50_ms": report.median([result["p50_ms"] for result in good]),
                "p99_ms": report.median([result["p99_ms"] for result in good]),
                "errors": sum(result["errors"] for result in good) + len(results) - len(good),
            }
        reference = medians.get(REFERENCE, {}).get("rps") or None
        for row in medians.values():
            row["ratio"] = row["rps"] / reference if reference else None
            rows.append(row)
    return rows


def print_figures(rows: list[dict[str, Any]]) -> None:
    headers = ["C", "candidate", "req/s", "min", "max", "p50 ms", "p99 ms", "errors", "ratio"]
    body = [
        [
            row["concurrency"],
            row["candidate"],
            row["rps"],
            row["rps_min"],
            row["rps_max"],
            row["p50_ms"],
            row["p99_ms"],
            row["errors"],
            row["ratio"],
        ]
        for row in rows
    ]
    print(f"\nreq/s is the median over rounds; ratio is to {REFERENCE} at the same C.")
    print(report.table(headers, body))


def run_checks(candidates: list[Candidate], loop: str) -> dict[str, dict[str, str]]:
    checks = {}
    for candidate in candidates:
        # The checks run behind httpx.AsyncClient: candidates measured another way are
        # checked under their AsyncClient name.
        if candidate.name in (BASELINE, SEND_CANDIDATE) or candidate.name.startswith(DIRECT_PREFIX):
            continue
        result = run_child(candidate, ["--url", "unused", "--checks"], None, loop)
        checks[candidate.name] = result.get("checks", {"run": str(result.get("error"))})
    names = sorted({check for found in checks.values() for check in found})
    rows = [[name, *(found.get(check, "-") for check in names)] for name, found in checks.items()]
    print("\nBehaviour checks (ok, or what happened instead):")
    for name, found in checks.items():
        failures = {check: text for check, text in found.items() if text != "ok"}
        print(f"  {name}: " + ("all ok" if not failures else f"{len(failures)} not ok"))
        for check, text in failures.items():
            print(f"    {check}: {text}")
    short = [[row[0], *("ok" if cell == "ok" else "NO" for cell in row[1:])] for row in rows]
    print(report.table(["candidate", *names], short))
    return checks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.transports", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="timed requests per run")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="bound on each run")
    parser.add_argument("--concurrency", default="1,32,128", help="comma-separated task counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--only", help="comma-separated candidates, from: " + ",".join(CANDIDATES))
    parser.add_argument("--python", default=sys.executable, help="interpreter for candidates")
    parser.add_argument("--python-without-sniffio", help="interpreter of a venv without sniffio")
    parser.add_argument("--no-checks", action="store_true", help="skip the behaviour checks")
    parser.add_argument("--builtin-upstream", action="store_true", help="do not use nginx")
    parser.add_argument("--quick", action="store_true", help="2,000 requests, C=32, 1 round")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.requests, args.concurrency, args.rounds, args.max_seconds = 2_000, "32", 1, 5.0
    candidates = choose_candidates(args)
    if not candidates:
        print("no candidate can run here")
        return 1
    pinning = procs.plan_pinning()
    print(pinning.describe().replace("target", "candidate process"))
    with (
        tempfile.TemporaryDirectory(prefix="bench-transports-") as work,
        static_upstream(Path(work), pinning.load, builtin=args.builtin_upstream) as upstream,
    ):
        print(f"upstream: {upstream.kind} at {upstream.url} (pid {upstream.pid})")
        if upstream.warning:
            print(upstream.warning)
        runs = measure(candidates, upstream.url, args, pinning.target)
    rows = summarise(runs)
    print_figures(rows)
    checks = {} if args.no_checks else run_checks(candidates, args.loop)
    settings = {key: value for key, value in vars(args).items()}
    path = report.write_results(
        "transports-",
        {"settings": settings, "upstream": upstream.kind, "rows": rows, "checks": checks},
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
