"""Deliver routes, inbound signatures, body schemas and outbound signing, on real traffic."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bizproxy.gateway import Gateway
from bizproxy.signing import StandardWebhooksVerifier, sign_standard_webhooks
from tests.support.gateway import gateway_in_this_loop
from tests.support.upstream_app import UpstreamApp

SECRET = "whsec_" + base64.b64encode(b"payments-test-key-0123456789").decode()
OUTBOUND_SECRET = "whsec_" + base64.b64encode(b"outbound-key-abcdefghijklmn").decode()

SCHEMA = {
    "type": "object",
    "required": ["id", "amount"],
    "properties": {"id": {"type": "string"}, "amount": {"type": "integer", "minimum": 1}},
}

CONFIG = """
version: 1
upstreams:
  payments:
    url: {upstream}
    inbox: {{max_messages: 2}}
    sign: {{secret: "${{OUTBOUND_SECRET}}"}}
routes:
  - path: /hooks/payments
    methods: [POST]
    verify: {{scheme: standard-webhooks, secret: "${{HOOK_SECRET}}", tolerance: 5m}}
    body_schema: payment.schema.json
    deliver: {{upstream: payments}}
  - path: /hooks/github
    methods: [POST]
    verify:
      scheme: hmac-sha256
      secret: "${{GITHUB_SECRET}}"
      header: X-Hub-Signature-256
      prefix: "sha256="
    deliver: {{upstream: payments}}
  - path: /hooks/open
    methods: [POST]
    deliver: {{upstream: payments}}
  - path: /out/{{rest:path}}
    methods: [POST]
    forward: {{upstream: payments, path: "/echo/{{{{ path.rest }}}}"}}
"""


@pytest.fixture
async def gateway(upstream_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Gateway]]:
    (tmp_path / "payment.schema.json").write_text(json.dumps(SCHEMA))
    config = CONFIG.format(upstream=upstream_url)
    environ = {
        "HOOK_SECRET": SECRET,
        "OUTBOUND_SECRET": OUTBOUND_SECRET,
        "GITHUB_SECRET": "gh-secret",
    }
    async with gateway_in_this_loop(config, tmp_path, **environ) as served:
        yield served


def signed(body: bytes, message_id: str = "msg_1", at: float | None = None) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    headers = sign_standard_webhooks(SECRET, message_id, stamp, body)
    return {**headers, "content-type": "application/json"}


async def next_message(gateway: Gateway, name: str = "payments") -> object:
    async for message in gateway.proxy(name).receive():
        return message
    raise AssertionError("receive() ended without a message")


async def test_deliver_accepts_signed_valid_message_into_receive(
    gateway: tuple[str, Gateway],
) -> None:
    """A validly signed, schema-valid message answers 202 and reaches receive()."""
    url, served = gateway
    body = b'{"id": "p1", "amount": 5}'
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/hooks/payments", content=body, headers=signed(body))
    assert response.status_code == 202
    assert response.json() == {"message_id": "msg_1", "duplicate": False}
    assert await asyncio.wait_for(next_message(served), 2) == {"id": "p1", "amount": 5}


async def test_deliver_acknowledges_a_replay_without_delivering_it_again(
    gateway: tuple[str, Gateway],
) -> None:
    """The same signed message id twice: both 202, receive() sees it once."""
    url, served = gateway
    body = b'{"id": "p2", "amount": 9}'
    async with httpx.AsyncClient() as client:
        first = await client.post(f"{url}/hooks/payments", content=body, headers=signed(body, "m2"))
        again = await client.post(f"{url}/hooks/payments", content=body, headers=signed(body, "m2"))
    assert first.status_code == again.status_code == 202
    assert again.json() == {"message_id": "m2", "duplicate": True}
    assert served.proxy("payments").inbox_size == 1


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing header 'webhook-id'"),
        ({"webhook-signature": "v1,AAAA"}, "no signature matched"),
        ({"webhook-timestamp": str(int(time.time()) - 3600)}, "outside the tolerance"),
    ],
)
async def test_deliver_bad_signature_answers_401(
    gateway: tuple[str, Gateway], headers: dict[str, str], message: str
) -> None:
    """Missing, wrong or stale signatures answer 401 and deliver nothing."""
    url, served = gateway
    body = b'{"id": "p3", "amount": 1}'
    sent = signed(body) if headers else {"content-type": "application/json"}
    sent.update(headers)
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/hooks/payments", content=body, headers=sent)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "SignatureFailure"
    assert message in response.json()["error"]["message"]
    assert SECRET not in response.text
    assert served.proxy("payments").inbox_size == 0


async def test_deliver_hmac_sha256_signature(gateway: tuple[str, Gateway]) -> None:
    """An X-Hub-Signature-256 style hex digest with prefix is checked."""
    url, _ = gateway
    body = b'{"action": "opened"}'
    digest = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
    async with httpx.AsyncClient() as client:
        good = await client.post(
            f"{url}/hooks/github", content=body, headers={"X-Hub-Signature-256": f"sha256={digest}"}
        )
        bad = await client.post(
            f"{url}/hooks/github", content=body, headers={"X-Hub-Signature-256": "sha256=00"}
        )
    assert good.status_code == 202
    assert bad.status_code == 401


async def test_deliver_malformed_json_answers_400(gateway: tuple[str, Gateway]) -> None:
    """A body that is not JSON answers 400."""
    url, _ = gateway
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/hooks/open", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "MalformedJSON"
    assert response.json()["error"]["message"].startswith("request body is not valid JSON: ")


async def test_deliver_schema_violation_answers_422_with_pointers(
    gateway: tuple[str, Gateway],
) -> None:
    """A body that breaks the schema answers 422 with the JSON pointer of each violation."""
    url, _ = gateway
    body = b'{"id": 7, "amount": 0}'
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/hooks/payments", content=body, headers=signed(body))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "SchemaViolation"
    assert [v["pointer"] for v in error["violations"]] == ["/amount", "/id"]
    assert error["violations"][1]["message"] == "7 is not of type 'string'"


async def test_deliver_full_inbox_answers_503_with_retry_after(
    gateway: tuple[str, Gateway],
) -> None:
    """With the inbox full, deliver answers 503 and Retry-After; nothing is lost."""
    url, served = gateway
    async with httpx.AsyncClient() as client:
        answers = [await client.post(f"{url}/hooks/open", json={"n": n}) for n in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 503]
    assert answers[2].headers["retry-after"] == "1"
    assert answers[2].json()["error"]["type"] == "InboxFull"
    assert served.proxy("payments").inbox_size == 2


async def test_deliver_refused_signed_message_can_be_sent_again(
    gateway: tuple[str, Gateway],
) -> None:
    """A signed message refused for a full inbox is not remembered as delivered."""
    url, served = gateway
    async with httpx.AsyncClient() as client:
        for n in range(2):
            await client.post(f"{url}/hooks/open", json={"n": n})
        body = b'{"id": "p9", "amount": 3}'
        refused = await client.post(
            f"{url}/hooks/payments", content=body, headers=signed(body, "m9")
        )
        await next_message(served)
        retried = await client.post(
            f"{url}/hooks/payments", content=body, headers=signed(body, "m9")
        )
    assert refused.status_code == 503
    assert retried.json() == {"message_id": "m9", "duplicate": False}


async def test_forward_signs_outbound_bodies_for_the_upstream(
    gateway: tuple[str, Gateway], upstream_app: UpstreamApp
) -> None:
    """Forwarded bodies and send() messages carry standard-webhooks signatures that verify."""
    url, served = gateway
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/out/signed", json={"total": 10})
    assert response.status_code == 200
    await served.proxy("payments").send({"hello": "upstream"})
    verifier = StandardWebhooksVerifier(OUTBOUND_SECRET)
    for request in upstream_app.received("/echo/signed") + upstream_app.received("/send"):
        headers = dict(request.headers)
        assert verifier.verify(headers, request.body) == headers["webhook-id"]
