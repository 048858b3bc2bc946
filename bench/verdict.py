"""The speed targets, judged on one run of ``bench.run``.

Ratios between two targets are paired by round: targets run interleaved (A B C, A B C),
so the two runs of one round saw the same machine, and the median of the per-round
ratios is steadier than the ratio of medians when the machine drifts.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]

RSS_LIMIT_MIB = 100.0


@dataclass(frozen=True)
class Verdict:
    target: str
    figures: str
    met: bool | None
    """None when the run lacks the rows the target needs."""


def _find(rows: list[Row], target: str, scenario: str, routes: int | None = None) -> Row | None:
    return next(
        (
            row
            for row in rows
            if row["target"] == target
            and row["scenario"] == scenario
            and (routes is None or row["routes"] == routes)
        ),
        None,
    )


def paired_ratio(row: Row, reference: Row, key: str = "rps") -> float:
    """Median over rounds of row's figure divided by the reference's in the same round."""
    pairs = zip(row["runs"], reference["runs"], strict=False)
    return statistics.median(mine[key] / theirs[key] for mine, theirs in pairs if theirs[key])


def _judge(name: str, needed: list[Row | None], judge: Callable[..., tuple[str, bool]]) -> Verdict:
    if any(row is None for row in needed):
        return Verdict(name, "not measured in this run", None)
    figures, met = judge(*needed)
    return Verdict(name, figures, met)


def verdicts(rows: list[Row]) -> list[Verdict]:
    found: list[Verdict] = []
    routes = sorted({row["routes"] for row in rows if row["target"] == "bizproxy"})
    small = routes[0] if routes else None
    large = routes[-1] if len(routes) > 1 else None

    def over_naive(mine: Row, naive: Row) -> tuple[str, bool]:
        ratio = paired_ratio(mine, naive)
        return f"{ratio:.2f}x the naive forwarder", ratio >= 3.0

    found.append(
        _judge(
            f"get, {small} routes: at least 3x the naive forwarder",
            [_find(rows, "bizproxy", "get", small), _find(rows, "naive", "get")],
            over_naive,
        )
    )

    def against_aiohttp(mine: Row, theirs: Row) -> tuple[str, bool]:
        ratio = paired_ratio(mine, theirs)
        p99 = paired_ratio(mine, theirs, "p99_ms")
        text = f"{ratio:.2f}x its req/s, p99 {p99:.2f}x its p99"
        return text, ratio >= 1.0 and p99 <= 1.0

    for scenario in ("get", "post-64k"):
        found.append(
            _judge(
                f"{scenario}, {small} routes: at least the aiohttp forwarder, p99 no worse",
                [_find(rows, "bizproxy", scenario, small), _find(rows, "aiohttp", scenario)],
                against_aiohttp,
            )
        )

    def route_count_cost(many: Row, few: Row) -> tuple[str, bool]:
        ratio = paired_ratio(many, few)
        return f"{ratio:.2f}x the req/s of {small} routes", ratio >= 0.90

    if large is not None:
        for scenario in ("get", "post-64k", "guarded-get"):
            found.append(
                _judge(
                    f"{scenario}: {large} routes within 10% of {small}",
                    [
                        _find(rows, "bizproxy", scenario, large),
                        _find(rows, "bizproxy", scenario, small),
                    ],
                    route_count_cost,
                )
            )

    def guard_cost(guarded: Row, plain: Row) -> tuple[str, bool]:
        ratio = paired_ratio(guarded, plain)
        return f"{ratio:.2f}x the plain route's req/s", ratio >= 0.85

    for count in routes:
        found.append(
            _judge(
                f"guarded-get, {count} routes: throttle tag and retry policy cost at most 15%",
                [
                    _find(rows, "bizproxy", "guarded-get", count),
                    _find(rows, "bizproxy", "get", count),
                ],
                guard_cost,
            )
        )

    if large is not None:
        peaks = [row["peak_rss_mib"] for row in rows if row["routes"] == large]
        found.append(
            Verdict(
                f"peak RSS under {RSS_LIMIT_MIB:.0f} MiB at {large} routes",
                f"{max(peaks):.1f} MiB",
                max(peaks) < RSS_LIMIT_MIB,
            )
        )
    return found


def print_verdicts(rows: list[Row]) -> None:
    print("\nspeed targets (ratios: median over rounds of same-round ratios):")
    for verdict in verdicts(rows):
        mark = {True: "met", False: "NOT MET", None: "-"}[verdict.met]
        print(f"  {mark:7}  {verdict.target}: {verdict.figures}")
