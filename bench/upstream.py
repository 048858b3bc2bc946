"""The static upstream every benchmark forwards to: nginx when installed, else a built-in one."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench import procs

BODY_BYTES = 512


def static_body() -> bytes:
    """The JSON body the upstream answers with: exactly BODY_BYTES bytes."""
    head, end = b'{"ok":true,"pad":"', b'"}'
    return head + b"x" * (BODY_BYTES - len(head) - len(end)) + end


@dataclass(frozen=True)
class Upstream:
    """A running static upstream: where it listens and what serves it."""

    url: str
    kind: Literal["nginx", "builtin"]
    pid: int

    @property
    def warning(self) -> str | None:
        if self.kind == "nginx":
            return None
        return (
            "WARNING: nginx is not installed, so the upstream is the built-in Python one; "
            "figures are then bounded by the upstream too (apt-get install nginx)."
        )


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


def nginx_path() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx",) if Path(path).exists()), None
    )


def _nginx_argv(work: Path, port: int, nginx: str) -> list[str]:
    conf = work / "nginx.conf"
    text = NGINX_CONF.format(work=work, port=port, body=static_body().decode())
    conf.write_text(text)
    return [nginx, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")]


def _builtin_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.builtin_upstream", "--port", str(port)]


@contextlib.contextmanager
def static_upstream(
    work: Path, cores: frozenset[int] | None, *, builtin: bool = False
) -> Iterator[Upstream]:
    """Run the static upstream on 127.0.0.1 until the block ends; stop it by its PID."""
    port = procs.free_port()
    nginx = None if builtin else nginx_path()
    kind: Literal["nginx", "builtin"] = "nginx" if nginx else "builtin"
    argv = _nginx_argv(work, port, nginx) if nginx else _builtin_argv(port)
    log = work / f"upstream-{kind}.log"
    repo = Path(__file__).resolve().parent.parent
    proc = procs.start(argv, cores=cores, log_path=log, cwd=repo)
    try:
        procs.wait_for_port(port, proc, 10.0, log)
        yield Upstream(url=f"http://127.0.0.1:{port}", kind=kind, pid=proc.pid)
    finally:
        procs.stop(proc)
