"""The benchmark harness, end to end on a small scale, and its pure helpers."""

from __future__ import annotations

from typing import Any

from bench.compare import Key, compare
from bench.harness import Settings, run_benchmark
from bench.routes import routes_config


def test_harness_naive_baseline_row_has_throughput_and_no_errors() -> None:
    """A one-second run of the naive forwarder yields a row with req/s above 0 and no errors."""
    settings = Settings(
        duration_s=1.0,
        rounds=1,
        only=("naive",),
        scenarios=("get",),
        warm_up_s=0.0,
        python_load=True,
        builtin_upstream=True,
        time_check=False,
    )

    results = run_benchmark(settings, say=lambda line: None)

    assert results.skipped == []
    [row] = results.rows
    assert (row["target"], row["scenario"]) == ("naive", "get")
    assert row["rps"] > 0
    assert row["errors"] == 0
    assert row["peak_rss_mib"] > 0
    assert row["ratio_to_naive"] == 1.0


def test_routes_config_places_hit_routes_last_among_count_routes() -> None:
    """A generated config holds exactly N routes, the two hit routes at the end."""
    config = routes_config(1000, "http://127.0.0.1:1")

    paths = [route["path"] for route in config["routes"]]

    assert len(paths) == 1000
    assert paths[-2:] == ["/hit/{id}", "/hit-guarded/{id}"]
    assert config["routes"][-1]["tag"] == "bench"
    assert config["upstreams"]["static_guarded"]["retry"] == "bench"


def test_compare_marks_rows_slower_beyond_threshold() -> None:
    """A row whose req/s fell by more than the threshold is counted and marked SLOWER."""
    key: Key = ("bizproxy", "get", 10)
    old: dict[Key, dict[str, Any]] = {key: {"rps": 1000.0, "p99_ms": 2.0, "ratio_to_naive": 1.0}}
    new: dict[Key, dict[str, Any]] = {key: {"rps": 900.0, "p99_ms": 2.5, "ratio_to_naive": 0.9}}

    rows, slower = compare(old, new, threshold=0.05)

    assert slower == 1
    assert rows[0][-1] == "SLOWER"


def _row(target: str, scenario: str, routes: int | None, *rps: float, p99: float = 10.0) -> dict:
    runs = [{"rps": value, "p99_ms": p99} for value in rps]
    return {
        "target": target,
        "scenario": scenario,
        "routes": routes,
        "runs": runs,
        "peak_rss_mib": 70.0,
    }


def test_verdict_pairs_rounds_and_judges_each_target() -> None:
    """Ratios are medians of same-round ratios; each speed target is met or not by them."""
    from bench.verdict import verdicts

    rows = [
        _row("naive", "get", None, 100, 50, 100),
        _row("aiohttp", "get", None, 1000, 500, 1000, p99=20.0),
        _row("bizproxy", "get", 10, 1100, 560, 900, p99=15.0),
        _row("bizproxy", "get", 1000, 1000, 500, 900),
        _row("bizproxy", "guarded-get", 10, 800, 400, 700),
    ]
    found = {verdict.target: verdict for verdict in verdicts(rows)}
    naive = found["get, 10 routes: at least 3x the naive forwarder"]
    assert (naive.figures, naive.met) == ("11.00x the naive forwarder", True)
    aiohttp = found["get, 10 routes: at least the aiohttp forwarder, p99 no worse"]
    assert (aiohttp.figures, aiohttp.met) == ("1.10x its req/s, p99 0.75x its p99", True)
    assert found["post-64k, 10 routes: at least the aiohttp forwarder, p99 no worse"].met is None
    routes = found["get: 1000 routes within 10% of 10"]
    assert (routes.figures, routes.met) == ("0.91x the req/s of 10 routes", True)
    guarded = found["guarded-get, 10 routes: throttle tag and retry policy cost at most 15%"]
    assert (guarded.figures, guarded.met) == ("0.73x the plain route's req/s", False)
