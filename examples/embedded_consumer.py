"""Business code running its own consumer next to the bizproxy server, in one process.

It serves the bundled routes.yaml, consumes what the `POST /hooks/payments` deliver
route hands to the `example` upstream's receive() stream, and for each payment sends a
message out through the same upstream with send(). It imports neither httpx nor
FastAPI: only bizproxy.

    python -m examples.embedded_consumer [--port 8080] [--max-messages N]

(Start the example upstream first: python -m examples.example_upstream.)
"""

from __future__ import annotations

import argparse
import asyncio

import bizproxy


async def consume(gateway: bizproxy.Gateway, limit: int | None) -> int:
    proxy = gateway.proxy("example")
    handled = 0
    async for payment in proxy.receive():
        answer = await proxy.send({"event": "payment.received", "payment": payment}, tag="checkout")
        print(f"payment {payment} acknowledged upstream: {answer}", flush=True)
        handled += 1
        if limit is not None and handled >= limit:
            break
    return handled


async def run(port: int, limit: int | None) -> None:
    gateway = bizproxy.load_gateway("routes.yaml")
    stop = asyncio.Event()
    server = asyncio.create_task(bizproxy.serve(gateway, port=port, watch=False, stop=stop))
    while not gateway.started:
        await asyncio.sleep(0.05)
    try:
        await consume(gateway, limit)
    finally:
        stop.set()
        await server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-messages", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(run(args.port, args.max_messages))


if __name__ == "__main__":
    main()
