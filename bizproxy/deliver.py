"""Delivering: an inbound message goes into an upstream proxy's receive() stream."""

from __future__ import annotations

import logging

from bizproxy.admission import admit_body
from bizproxy.inbound import (
    InboundRequest,
    Receive,
    Send,
    send_json,
    throttle_client_key,
)
from bizproxy.table import CompiledRoute, DeliverTarget, RouteTable

logger = logging.getLogger("bizproxy.deliver")


async def deliver(
    table: RouteTable,
    route: CompiledRoute,
    target: DeliverTarget,
    request: InboundRequest,
    receive: Receive,
    send: Send,
) -> int:
    """Serve one request on a deliver route: 202 with a message id once the inbox holds it."""
    body = await admit_body(route, request, receive, table.server.max_body_bytes, require_json=True)
    if table.throttle is not None:
        client_key = throttle_client_key(request, route.throttle_per, table.server.trusted_proxies)
        await table.throttle.admit(route.tag, client_key)

    # A sender retrying a message we already hold is told "accepted" so it stops retrying.
    ids = route.delivered_ids if body.message_id is not None else None
    if ids is not None and body.message_id is not None and ids.contains(body.message_id):
        await send_json(
            send,
            202,
            {"message_id": body.message_id, "duplicate": True},
            request_id=request.request_id,
        )
        return 202

    message_id = await table.proxies[target.upstream].deliver(body.parsed)
    # Recorded only once the inbox holds it: a refused delivery may be sent again.
    if ids is not None and body.message_id is not None:
        ids.record(body.message_id)
    await send_json(
        send,
        202,
        {"message_id": body.message_id or message_id, "duplicate": False},
        request_id=request.request_id,
    )
    return 202
