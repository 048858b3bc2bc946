"""The proxy table: start upstream and targets, run every scenario interleaved, collect rows.

``run_benchmark(settings)`` is what ``python -m bench.run`` calls; tests call it too.
Targets are pinned to one core and the load generator and upstream to the other; every
round runs each scenario against every target in turn (A B C A B C), so drift on the
machine falls on all targets alike, and each row is the median over rounds.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import load, procs, report
from bench.routes import write_routes
from bench.targets import (
    KINDS,
    REPO,
    RunningTarget,
    TargetSpec,
    bizproxy_missing,
    sanity_problem,
    start_target,
    target_env,
)
from bench.upstream import static_upstream

Say = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """One kind of request: method, body size, and whether it uses the guarded route."""

    name: str
    method: str
    body_bytes: int = 0
    guarded: bool = False

    def path(self, target: TargetSpec) -> str:
        if target.route_file is None:
            return "/hit/1"
        return target.route_file.guarded_path if self.guarded else target.route_file.hit_path

    def applies_to(self, target: TargetSpec) -> bool:
        # Baselines have no throttle or retry; their plain GET is the reference instead.
        return not self.guarded or target.kind == "bizproxy"

    @property
    def reference(self) -> str:
        return "get" if self.guarded else self.name


SCENARIOS = (
    Scenario("get", "GET"),
    Scenario("post-64k", "POST", body_bytes=64 * 1024),
    Scenario("guarded-get", "GET", guarded=True),
)


@dataclass(frozen=True)
class Settings:
    duration_s: float = 5.0
    connections: int = 32
    rounds: int = 3
    only: tuple[str, ...] = KINDS
    route_counts: tuple[int, ...] = (10, 1000)
    scenarios: tuple[str, ...] = tuple(scenario.name for scenario in SCENARIOS)
    warm_up_s: float = 1.0
    python_load: bool = False
    builtin_upstream: bool = False
    time_check: bool = True


@dataclass
class Results:
    settings: Settings
    environment: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    check: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "environment": self.environment,
            "rows": self.rows,
            "skipped": self.skipped,
            "check": self.check,
        }


def _specs(settings: Settings, work: Path, upstream_url: str, say: Say) -> list[TargetSpec]:
    specs = [TargetSpec(kind) for kind in KINDS if kind != "bizproxy" and kind in settings.only]
    if "bizproxy" not in settings.only:
        return specs
    missing = bizproxy_missing("serve")
    if missing:
        say(f"skip bizproxy: {missing}; the baselines still run.")
        return specs
    for count in settings.route_counts:
        specs.append(TargetSpec("bizproxy", write_routes(work, count, upstream_url)))
    return specs


def _start_all(
    specs: list[TargetSpec], upstream_url: str, pinning: procs.Pinning, work: Path, stack: ExitStack
) -> tuple[list[RunningTarget], list[str]]:
    running, skipped = [], []
    for spec in specs:
        try:
            target = start_target(spec, upstream_url, pinning.target, work)
        except RuntimeError as err:
            skipped.append(f"{spec.label}: did not start: {err}")
            continue
        stack.callback(procs.stop, target.proc)
        problem = sanity_problem(target, sorted({s.path(spec) for s in SCENARIOS}))
        if problem:
            skipped.append(f"{spec.label}: does not forward correctly: {problem}")
            procs.stop(target.proc)
            continue
        running.append(target)
    return running, skipped


def _one_run(
    target: RunningTarget,
    scenario: Scenario,
    settings: Settings,
    generator: load.Generator,
    pinning: procs.Pinning,
    work: Path,
    duration_s: float,
) -> dict[str, Any]:
    rss_reset = procs.reset_peak_rss(target.proc.pid)
    result = load.run_load(
        target.url(scenario.path(target.spec)),
        method=scenario.method,
        body_bytes=scenario.body_bytes,
        duration_s=duration_s,
        connections=settings.connections,
        cores=pinning.load,
        generator=generator,
        work=work,
    )
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "requests": result.requests,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "errors": result.errors,
        "peak_rss_mib": procs.peak_rss_kib(target.proc.pid) / 1024,
        "rss_per_run": rss_reset,
    }


def _rows(
    runs: dict[tuple[str, str], list[dict[str, Any]]], specs: dict[str, TargetSpec]
) -> list[dict[str, Any]]:
    rows = []
    for (label, scenario_name), results in runs.items():
        spec = specs[label]
        rows.append(
            {
                "target": spec.kind,
                "scenario": scenario_name,
                "routes": spec.routes,
                "rps": statistics.median(r["rps"] for r in results),
                "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "p99_ms": statistics.median(r["p99_ms"] for r in results),
                "errors": sum(r["errors"] for r in results),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
                "rounds": len(results),
                "runs": results,
            }
        )
    naive = {row["scenario"]: row["rps"] for row in rows if row["target"] == "naive"}
    by_name = {scenario.name: scenario for scenario in SCENARIOS}
    for row in rows:
        reference = naive.get(by_name[row["scenario"]].reference)
        row["ratio_to_naive"] = row["rps"] / reference if reference else None
    return rows


def time_bizproxy_check(route_file: Path, repeats: int = 3) -> dict[str, Any]:
    """Wall time of ``python -m bizproxy check FILE``, median of ``repeats`` runs."""
    walls, codes = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bizproxy", "check", str(route_file)],
            cwd=REPO,
            env=target_env(),
            capture_output=True,
            timeout=120,
            check=False,
        )
        walls.append(time.perf_counter() - started)
        codes.append(done.returncode)
    return {"file": route_file.name, "median_s": statistics.median(walls), "exit_codes": codes}


def _environment(upstream_kind: str, generator: str, pinning: procs.Pinning) -> dict[str, Any]:
    import httpx

    return {
        "upstream": upstream_kind,
        "generator": generator,
        "pinning": pinning.describe(),
        "python": platform.python_version(),
        "httpx": httpx.__version__,
        "cpus": sorted(os.sched_getaffinity(0)),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_benchmark(settings: Settings, say: Say = print) -> Results:
    """Run the whole table once; return its rows (medians over rounds) and what was skipped."""
    results = Results(settings)
    pinning = procs.plan_pinning()
    generator = load.choose_generator(settings.python_load)
    scenarios = [s for s in SCENARIOS if s.name in settings.scenarios]
    with tempfile.TemporaryDirectory(prefix="bench-run-") as work_dir, ExitStack() as stack:
        work = Path(work_dir)
        upstream = stack.enter_context(
            static_upstream(work, pinning.load, builtin=settings.builtin_upstream)
        )
        results.environment = _environment(upstream.kind, generator, pinning)
        say(pinning.describe())
        say(f"upstream: {upstream.kind} at {upstream.url}; load generator: {generator}")
        for warning in (upstream.warning, load.generator_warning(generator)):
            if warning:
                say(warning)

        specs = _specs(settings, work, upstream.url, say)
        running, results.skipped = _start_all(specs, upstream.url, pinning, work, stack)
        for reason in results.skipped:
            say(f"skip {reason}")

        def run(target: RunningTarget, scenario: Scenario, seconds: float) -> dict[str, Any]:
            return _one_run(target, scenario, settings, generator, pinning, work, seconds)

        if settings.warm_up_s > 0:
            for target in running:
                run(target, scenarios[0], settings.warm_up_s)

        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for round_index in range(settings.rounds):
            for scenario in scenarios:
                for target in running:
                    if not scenario.applies_to(target.spec) or target.proc.poll() is not None:
                        continue
                    found = run(target, scenario, settings.duration_s)
                    runs.setdefault((target.spec.label, scenario.name), []).append(found)
                    say(
                        f"round {round_index + 1}/{settings.rounds} {scenario.name:<12} "
                        f"{target.spec.label:<24} {found['rps']:>9,.0f} req/s  "
                        f"p99 {found['p99_ms']:.2f} ms  errors {found['errors']}"
                    )
        results.rows = _rows(runs, {target.spec.label: target.spec for target in running})

        files = [t.spec.route_file for t in running if t.spec.route_file is not None]
        if settings.time_check and files:
            missing = bizproxy_missing("check")
            if missing:
                say(f"skip check timing: {missing}")
            else:
                largest = max(files, key=lambda route_file: route_file.routes)
                results.check = time_bizproxy_check(largest.path)
    return results


def save(results: Results) -> Path:
    return report.write_results("", results.as_json())
