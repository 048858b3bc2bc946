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
