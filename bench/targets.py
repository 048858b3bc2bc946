"""The targets of the proxy table: bizproxy and the two baseline forwarders, as processes."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from bench import procs
from bench.routes import RouteFile
from bench.upstream import static_body

REPO = Path(__file__).resolve().parent.parent
BASELINES = Path(__file__).resolve().parent / "baselines"
Kind = Literal["naive", "naive-aiohttp-transport", "aiohttp", "bizproxy"]
KINDS: tuple[Kind, ...] = ("naive", "naive-aiohttp-transport", "aiohttp", "bizproxy")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class TargetSpec:
    """One measured process: a kind, and for bizproxy the routes file it serves."""

    kind: Kind
    route_file: RouteFile | None = None

    @property
    def routes(self) -> int | None:
        return self.route_file.routes if self.route_file else None

    @property
    def label(self) -> str:
        return self.kind if self.routes is None else f"{self.kind}[{self.routes} routes]"


@dataclass
class RunningTarget:
    spec: TargetSpec
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def target_env() -> dict[str, str]:
    """The environment for targets: this checkout's bizproxy first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def target_argv(spec: TargetSpec, port: int, upstream_url: str) -> list[str]:
    if spec.kind in ("naive", "naive-aiohttp-transport"):
        script = BASELINES / "naive_fastapi_httpx.py"
        transport = "aiohttp" if spec.kind == "naive-aiohttp-transport" else "default"
        argv = [sys.executable, str(script), "--upstream", upstream_url, "--port", str(port)]
        return [*argv, "--transport", transport]
    if spec.kind == "aiohttp":
        script = BASELINES / "aiohttp_forwarder.py"
        return [sys.executable, str(script), "--upstream", upstream_url, "--port", str(port)]
    if spec.route_file is None:
        raise ValueError("a bizproxy target needs a routes file")
    serve = ["serve", str(spec.route_file.path), "--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "-m", "bizproxy", *serve]


def bizproxy_missing(command: str = "serve") -> str | None:
    """Why ``python -m bizproxy COMMAND`` cannot be used here, or None when it can."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bizproxy", command, "--help"],
            cwd=REPO,
            env=target_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"`python -m bizproxy {command} --help` did not finish within 30 s"
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"`python -m bizproxy {command} --help` exited with code {done.returncode} ({last})"


def start_target(
    spec: TargetSpec, upstream_url: str, cores: frozenset[int] | None, work: Path
) -> RunningTarget:
    """Start a target pinned to ``cores`` and wait until it accepts connections."""
    port = procs.free_port()
    log = work / f"target-{spec.label.replace('[', '-').replace(' ', '-').rstrip(']')}.log"
    argv = target_argv(spec, port, upstream_url)
    proc = procs.start(argv, cores=cores, log_path=log, env=target_env(), cwd=REPO)
    try:
        procs.wait_for_port(port, proc, START_TIMEOUT_S, log)
    except BaseException:
        procs.stop(proc)
        raise
    return RunningTarget(spec=spec, proc=proc, port=port, log=log)


def sanity_problem(target: RunningTarget, paths: list[str]) -> str | None:
    """Why the target does not forward correctly, or None: each path must answer the body."""
    expected = static_body()
    try:
        with httpx.Client(timeout=10.0) as client:
            for path in paths:
                for method, body in (("GET", None), ("POST", b"x" * 65536)):
                    answer = client.request(method, target.url(path), content=body)
                    if answer.status_code != 200 or answer.content != expected:
                        return (
                            f"{method} {path} answered {answer.status_code} with "
                            f"{len(answer.content)} bytes ({answer.content[:120]!r}), "
                            f"expected 200 with the {len(expected)}-byte static body"
                        )
    except httpx.HTTPError as err:
        return f"request to {target.url(paths[0])} failed: {type(err).__name__}: {err}"
    return None
