"""Processes the benchmarks start: free ports, core pinning, readiness, peak RSS, stopping."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pinning:
    """Which cores the measured process gets and which the load side (generator, upstream) gets."""

    target: frozenset[int] | None
    load: frozenset[int] | None

    def describe(self) -> str:
        if self.target is None or self.load is None:
            return "no pinning: fewer than 2 usable cores, so target and load share them"
        return (
            f"pinning: target on core {_cores(self.target)}; "
            f"load generator and upstream on core {_cores(self.load)}"
        )


def _cores(cores: frozenset[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))


def plan_pinning() -> Pinning:
    """Give the target the first usable core and the load side the second, when there are two."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return Pinning(target=None, load=None)
    return Pinning(target=frozenset({usable[0]}), load=frozenset({usable[1]}))


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinner(cores: frozenset[int] | None) -> Callable[[], None] | None:
    """A pre-exec hook that pins the child to ``cores``, or None when there is no pinning."""
    if cores is None:
        return None
    chosen = set(cores)

    def pin() -> None:
        os.sched_setaffinity(0, chosen)

    return pin


def start(
    argv: Sequence[str],
    *,
    cores: frozenset[int] | None,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a process pinned to ``cores`` (inherited by its threads and children)."""
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=pinner(cores),
        )
    finally:
        log.close()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Wait until something accepts on 127.0.0.1:port; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.args!r} exited with code {proc.returncode} before listening "
                f"on port {port}; its output:\n{tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"process {proc.args!r} did not listen on port {port} within {timeout_s} s; "
        f"its output:\n{tail(log)}"
    )


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Stop a process this harness started: SIGTERM by its PID, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def _family(pid: int) -> list[int]:
    """The process and its descendants, from /proc (threads' children included)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            children = (task / "children").read_text().split()
            for child in children:
                found.extend(_family(int(child)))
    return found


def _status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) of a process and its descendants, in KiB."""
    return sum(_status_kib(member, "VmHWM") for member in _family(pid))


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5), so a peak belongs to one run."""
    reset = True
    for member in _family(pid):
        try:
            Path(f"/proc/{member}/clear_refs").write_text("5")
        except OSError:
            reset = False
    return reset
