"""Business code that talks to an upstream only through bizproxy's interface.

It sends messages out with `send()` and consumes messages delivered to the proxy with
`receive()`. It imports neither httpx nor FastAPI. Start the example upstream first
(`python -m examples.example_upstream`), or pass `--start-upstream`.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from bizproxy import BusinessProxyException, BusinessProxyInterface, HTTPXFastAPIProxy


async def consume(proxy: BusinessProxyInterface, seen: list[object]) -> None:
    async for message in proxy.receive():
        print(f"received: {message}")
        seen.append(message)


async def run(url: str) -> int:
    proxy = HTTPXFastAPIProxy(url, name="orders")
    async with proxy:
        seen: list[object] = []
        consumer = asyncio.create_task(consume(proxy, seen))
        for number in range(3):
            try:
                answer = await proxy.send({"event": "order.paid", "order": number}, tag="demo")
            except BusinessProxyException as error:
                print(f"send failed: {error}", file=sys.stderr)
                return 1
            print(f"sent order {number}; upstream answered {answer}")
        # The inbound side of a gateway calls deliver(); here we play that part.
        await proxy.deliver({"event": "payment.settled", "order": 1})
        await asyncio.sleep(0.1)
    await consumer
    return 0 if seen else 1


def wait_for_port(url: str, process: subprocess.Popen[bytes]) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"the example upstream did not start at {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:9001")
    parser.add_argument("--start-upstream", action="store_true")
    args = parser.parse_args()
    upstream = None
    if args.start_upstream:
        port = args.url.rsplit(":", 1)[1]
        command = [sys.executable, "-m", "examples.example_upstream", "--port", port]
        upstream = subprocess.Popen(command)
        wait_for_port(args.url, upstream)
    try:
        return asyncio.run(run(args.url))
    finally:
        if upstream is not None:
            upstream.terminate()
            upstream.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
