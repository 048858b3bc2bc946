"""How long `bizproxy check` takes on a large config: 1,000 routes over 100 upstreams.

Writes the config to a temporary folder, then times `load_config` (parse, substitute,
validate, check references, templates, schema files and plug-ins) against plain
`yaml.safe_load` of the same file, measured in the same run as a baseline. Prints the
first load (what one `bizproxy check` pays), the median of several runs of each (later
loads reuse parsed templates, as a reload does) and the ratio of the medians.

    python bench/check_bench.py [--routes 1000] [--upstreams 100] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bizproxy.config import load_config, summary


def generate(routes: int, upstreams: int) -> str:
    """A config in the shape operators write, with templates, tags and schema checks."""
    lines = [
        "version: 1",
        "server: {max_body: 1MiB, drain_timeout: 30s, trusted_proxies: [127.0.0.1]}",
        "retry_policies:",
        "  standard:",
        "    attempts: 3",
        "    backoff: {initial: 100ms, max: 2s, multiplier: 2, jitter: full}",
        "    retry_on: [connect-error, timeout, reset, 502, 503, 504]",
        "    budget: 20%",
        "throttles:",
        "  checkout: {rate: 20/s, burst: 40}",
        "  reports: {rate: 100/min, on_exceed: wait, max_wait: 5s}",
        "upstreams:",
    ]
    for index in range(upstreams):
        lines += [
            f"  service{index}:",
            f"    url: http://127.0.0.1:{9000 + index}",
            "    timeout: {connect: 2s, read: 10s, write: 10s, pool: 5s}",
            "    retry: standard",
            "    headers: {X-Client: bizproxy}",
        ]
    lines.append("routes:")
    for index in range(routes):
        upstream = f"service{index % upstreams}"
        if index % 10 == 9:
            lines += [
                f"  - path: /hooks/{index}",
                "    methods: [POST]",
                "    body_schema: body.schema.json",
                f"    deliver: {{upstream: {upstream}}}",
            ]
            continue
        lines += [
            f"  - path: /api/v{index}/items/{{item_id}}",
            "    methods: [GET, PUT]",
            f"    tag: {'checkout' if index % 2 else 'reports'}",
            "    forward:",
            f"      upstream: {upstream}",
            f'      path: "/v2/items{index}/{{{{ path.item_id }}}}"',
            "      headers: {X-Tenant: \"{{ headers['x-tenant'] | default('public') }}\"}",
            "      timeout: 5s",
        ]
    return "\n".join(lines) + "\n"


def median_seconds(action: Callable[[], object], runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--upstreams", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "routes.yaml"
        config.write_text(generate(args.routes, args.upstreams), encoding="utf-8")
        (Path(folder) / "body.schema.json").write_text('{"type": "object"}', encoding="utf-8")
        text = config.read_text(encoding="utf-8")

        started = time.perf_counter()
        print(summary(load_config(config, environ={})))
        first = time.perf_counter() - started
        check = median_seconds(lambda: load_config(config, environ={}), args.runs)
        baseline = median_seconds(lambda: yaml.safe_load(text), args.runs)
        libyaml = median_seconds(lambda: yaml.load(text, Loader=yaml.CSafeLoader), args.runs)

    print(f"config: {len(text.splitlines())} lines, {len(text) / 1024:.0f} KiB")
    print(f"load_config:    {first * 1000:8.1f} ms (first, as `bizproxy check` runs it)")
    print(f"load_config:    {check * 1000:8.1f} ms (median of {args.runs}, templates cached)")
    print(f"yaml.safe_load: {baseline * 1000:8.1f} ms (median of {args.runs})")
    print(f"libyaml load:   {libyaml * 1000:8.1f} ms (median of {args.runs}, for context)")
    print(f"ratio:          {check / baseline:8.2f}x of yaml.safe_load")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
