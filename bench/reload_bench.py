"""Reload on a 1,000-route config: time from the write to the new table serving, and the
throughput dip while reloads happen, against the steady throughput of the same run.

    python -m bench.reload_bench [--routes 1000] [--reloads 10] [--connections 16]

Everything runs on 127.0.0.1 and stops by itself: a static upstream (nginx when
installed), `bizproxy serve` watching the file, and a bounded Python load loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
import yaml

from bench import procs
from bench.routes import routes_config
from bench.upstream import static_upstream


def write_config(path: Path, routes: int, upstream: str, probe: int) -> None:
    """The config with one extra route, /probe{probe}/{id}, that only this version has."""
    config = routes_config(routes, upstream)
    config["routes"].append(
        {
            "path": f"/probe{probe}/{{id}}",
            "methods": ["GET"],
            "forward": {"upstream": "static", "path": "/static/{{ path.id }}"},
        }
    )
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(temporary, path)


async def load(url: str, connections: int, stop: asyncio.Event, stamps: list[float]) -> int:
    """Steady GETs until `stop`; every completion's time goes to `stamps`. Returns errors."""
    errors = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while not stop.is_set():
            async with session.get(f"{url}/hit/1") as response:
                await response.read()
                if response.status == 200:
                    stamps.append(time.monotonic())
                else:
                    errors += 1

    # aiohttp as the load client: several times faster than httpx, so the figures are
    # less bound by the client.
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(connections)))
    return errors


async def time_to_serving(url: str, probe: int, written_at: float) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() - written_at < 30:
            if (await client.get(f"/probe{probe}/1")).status_code == 200:
                return time.monotonic() - written_at
            await asyncio.sleep(0.005)
    raise RuntimeError(f"version {probe} did not serve within 30 s")


def rate(stamps: list[float], start: float, end: float) -> float:
    return sum(start <= t < end for t in stamps) / max(end - start, 1e-9)


async def measure(url: str, config: Path, args: argparse.Namespace, upstream: str) -> None:
    stop = asyncio.Event()
    stamps: list[float] = []
    loader = asyncio.create_task(load(url, args.connections, stop, stamps))
    await asyncio.sleep(1.0)  # warm
    steady_start = time.monotonic()
    await asyncio.sleep(args.steady)
    steady_end = time.monotonic()

    delays, windows = [], []
    for probe in range(1, args.reloads + 1):
        written_at = time.monotonic()
        await asyncio.to_thread(write_config, config, args.routes, upstream, probe)
        delays.append(await time_to_serving(url, probe, written_at))
        await asyncio.sleep(0.5)
        windows.append((written_at, time.monotonic()))
    stop.set()
    errors = await loader

    steady = rate(stamps, steady_start, steady_end)
    during = [rate(stamps, start, end) for start, end in windows]
    print(f"routes: {args.routes}; reloads: {args.reloads}; connections: {args.connections}")
    print(
        "write -> new table serving: "
        f"median {statistics.median(delays) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms "
        "(includes the watcher's 200 ms debounce)"
    )
    print(f"steady throughput:        {steady:,.0f} req/s")
    print(
        f"throughput while reloading: median {statistics.median(during):,.0f} req/s, "
        f"worst {min(during):,.0f} req/s (ratio to steady: "
        f"{statistics.median(during) / steady:.2f}, worst {min(during) / steady:.2f})"
    )
    print(f"failed requests: {errors}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--steady", type=float, default=3.0, help="seconds of steady load")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bizproxy-reload-bench-") as folder:
        work = Path(folder)
        with static_upstream(work, None) as upstream:
            if upstream.warning:
                print(upstream.warning)
            config = work / "routes.yaml"
            write_config(config, args.routes, upstream.url, 0)
            port = procs.free_port()
            argv = [sys.executable, "-m", "bizproxy", "serve", str(config), "--port", str(port)]
            log = work / "bizproxy.log"
            root = Path(__file__).resolve().parent.parent
            server = procs.start(argv, cores=None, log_path=log, cwd=root)
            try:
                procs.wait_for_port(port, server, 30.0, log)
                asyncio.run(measure(f"http://127.0.0.1:{port}", config, args, upstream.url))
            finally:
                procs.stop(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
