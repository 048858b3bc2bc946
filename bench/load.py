"""Load generation for the proxy table: wrk when installed, else the built-in generator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench import procs

Generator = Literal["wrk", "python"]
WRK_TIMEOUT_S = 10
REPO = Path(__file__).resolve().parent.parent

WRK_SCRIPT = """\
wrk.method = "{method}"
{body}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"connect\\":%d,\\"read\\":%d," ..
    "\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    """What one bounded load run measured against one URL."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def choose_generator(force_python: bool = False) -> Generator:
    return "wrk" if shutil.which("wrk") and not force_python else "python"


def generator_warning(generator: Generator) -> str | None:
    if generator == "wrk":
        return None
    return (
        "WARNING: wrk is not installed, so the load generator is the built-in Python one; "
        "figures may then be bounded by the generator (apt-get install wrk)."
    )


def run_load(
    url: str,
    *,
    method: str,
    body_bytes: int,
    duration_s: float,
    connections: int,
    cores: frozenset[int] | None,
    generator: Generator,
    work: Path,
) -> LoadResult:
    """One bounded run: ``connections`` keep-alive connections for ``duration_s`` seconds."""
    if generator == "wrk":
        return _run_wrk(url, method, body_bytes, duration_s, connections, cores, work)
    return _run_python(url, method, body_bytes, duration_s, connections, cores)


def _wrk_script(method: str, body_bytes: int) -> str:
    body = ""
    if body_bytes:
        body = (
            f'wrk.body = string.rep("x", {body_bytes})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"'
        )
    return WRK_SCRIPT.format(method=method, body=body)


def _run_wrk(
    url: str,
    method: str,
    body_bytes: int,
    duration_s: float,
    connections: int,
    cores: frozenset[int] | None,
    work: Path,
) -> LoadResult:
    script = work / f"wrk-{method.lower()}-{body_bytes}.lua"
    script.write_text(_wrk_script(method, body_bytes))
    # wrk takes whole seconds; one thread, since it shares its core with the upstream.
    seconds = max(1, round(duration_s))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT_S}s"]
    output = _run([*argv, "-s", str(script), url], cores, seconds + WRK_TIMEOUT_S + 30)
    line = next((text for text in output.splitlines() if text.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary for {url}; its output:\n{output[-2000:]}")
    found = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        non_2xx=found["status"],
        socket_errors=found["connect"] + found["read"] + found["write"] + found["timeout"],
    )


def _run_python(
    url: str,
    method: str,
    body_bytes: int,
    duration_s: float,
    connections: int,
    cores: frozenset[int] | None,
) -> LoadResult:
    argv = [sys.executable, "-m", "bench.pyload", "--url", url, "--method", method]
    argv += ["--body-bytes", str(body_bytes), "--duration", str(duration_s)]
    argv += ["--connections", str(connections)]
    output = _run(argv, cores, duration_s + 60)
    found = json.loads(output.strip().splitlines()[-1])
    return LoadResult(
        requests=found["requests"],
        seconds=found["seconds"],
        p50_ms=found["p50_ms"],
        p99_ms=found["p99_ms"],
        non_2xx=found["non_2xx"],
        socket_errors=found["socket_errors"],
    )


def _run(argv: list[str], cores: frozenset[int] | None, timeout_s: float) -> str:
    done = subprocess.run(
        argv,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=procs.pinner(cores),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"load generator {argv[0]} exited with code {done.returncode}: {done.stderr[-2000:]}"
        )
    return done.stdout
