"""Serve the bundled routes.yaml together with the example upstream it points at.

    python -m examples.serve_bundled [--port 8080]

The example upstream listens where EXAMPLE_UPSTREAM_URL says (default
http://127.0.0.1:9001); bizproxy serves routes.yaml on 127.0.0.1:PORT until Ctrl-C or
SIGTERM, then the upstream is stopped too.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from urllib.parse import urlsplit

from bizproxy.cli import main as bizproxy_main
from examples.send_and_receive import wait_for_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", default="8080")
    parser.add_argument("--config", default="routes.yaml")
    args = parser.parse_args()

    upstream_url = os.environ.get("EXAMPLE_UPSTREAM_URL", "http://127.0.0.1:9001")
    upstream_port = str(urlsplit(upstream_url).port or 80)
    command = [sys.executable, "-m", "examples.example_upstream", "--port", upstream_port]
    upstream = subprocess.Popen(command)
    try:
        wait_for_port(upstream_url, upstream)
        print(f"example upstream on {upstream_url}; bizproxy on http://127.0.0.1:{args.port}")
        print(f"try: curl http://127.0.0.1:{args.port}/api/orders/42", flush=True)
        # uvicorn turns SIGTERM into a graceful shutdown once it runs; until then, exit.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        return bizproxy_main(["serve", args.config, "--port", args.port])
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
