"""The bundled example upstream: a tiny order service for the demo and the examples.

Run it with `python -m examples.example_upstream --port 9001`.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

app = FastAPI(title="example order service")
_order_ids = itertools.count(1000)
_messages: list[dict[str, Any]] = []


@app.get("/v2/orders/{order_id}")
async def get_order(order_id: str, request: Request) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "status": "shipped",
        "tenant": request.headers.get("x-tenant"),
        "served_by": "example-upstream",
    }


@app.post("/v2/orders", status_code=201)
async def create_order(request: Request) -> dict[str, Any]:
    order = await request.json()
    return {"order_id": next(_order_ids), "order": order, "status": "created"}


@app.post("/send")
async def receive_message(request: Request) -> dict[str, Any]:
    message = await request.json()
    _messages.append(message)
    return {
        "accepted": True,
        "count": len(_messages),
        "key": request.headers.get("idempotency-key"),
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
