"""``python -m bench.compare OLD.json NEW.json``: per-row changes between two runs of bench.run.

Rows are matched by target, scenario and route count. A row whose req/s fell by more than
the threshold (5 % unless ``--threshold`` says otherwise) is marked SLOWER, so a slowdown
shows in review; the exit code is 1 when any row is slower.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import report

Key = tuple[str, str, int | None]


def load_rows(path: Path) -> dict[Key, dict[str, Any]]:
    rows = json.loads(path.read_text())["rows"]
    return {(row["target"], row["scenario"], row["routes"]): row for row in rows}


def _change(old: float | None, new: float | None) -> float | None:
    if not old or new is None:
        return None
    return new / old


def compare(
    old: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]], threshold: float
) -> tuple[list[list[object]], int]:
    """Table rows for every key in either run, and how many rows got slower."""
    rows: list[list[object]] = []
    slower = 0
    for key in sorted(old.keys() | new.keys(), key=lambda k: (k[1], k[0], k[2] or 0)):
        before, after = old.get(key, {}), new.get(key, {})
        rps = _change(before.get("rps"), after.get("rps"))
        p99 = _change(before.get("p99_ms"), after.get("p99_ms"))
        note = "only in old" if not after else "only in new" if not before else ""
        if rps is not None and rps < 1 - threshold:
            note, slower = "SLOWER", slower + 1
        rows.append(
            [
                *[("-" if part is None else part) for part in key],
                before.get("rps"),
                after.get("rps"),
                rps,
                p99,
                before.get("ratio_to_naive"),
                after.get("ratio_to_naive"),
                note,
            ]
        )
    return rows, slower


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--threshold", type=float, default=0.05, help="fraction (0.05)")
    args = parser.parse_args(argv)
    rows, slower = compare(load_rows(args.old), load_rows(args.new), args.threshold)
    headers = [
        "target",
        "scenario",
        "routes",
        "old req/s",
        "new req/s",
        "new/old",
        "p99 new/old",
        "x naive old",
        "x naive new",
        "",
    ]
    print(report.table(headers, rows))
    print(f"\n{slower} row(s) slower by more than {args.threshold:.0%}.")
    return 1 if slower else 0


if __name__ == "__main__":
    raise SystemExit(main())
