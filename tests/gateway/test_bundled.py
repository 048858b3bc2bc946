"""The bundled routes.yaml served as the README runs it, and shutting down gracefully."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bizproxy.signing import sign_standard_webhooks
from tests.support.cli_server import ROOT, serve_process
from tests.support.servers import unused_port_url

DEMO_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def payment(payment_id: str, amount: int) -> dict[str, object]:
    data = {"payment_id": payment_id, "amount": amount, "currency": "EUR"}
    return {"type": "payment.succeeded", "data": data}


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/-/ready", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready at {url}; exit code {process.poll()}")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    return output


def test_bundled_config_serves_as_the_readme_runs_it() -> None:
    """`python -m examples.serve_bundled`: orders, a signed payment hook, clean exit."""
    upstream = unused_port_url()
    url = unused_port_url()
    port = url.rsplit(":", 1)[1]
    process = start(
        [sys.executable, "-m", "examples.serve_bundled", "--port", port],
        {"EXAMPLE_UPSTREAM_URL": upstream},
    )
    try:
        wait_ready(url, process)
        order = httpx.get(f"{url}/api/orders/42", headers={"X-Tenant": "acme"})
        created = httpx.post(f"{url}/api/orders", json={"item": "book"})
        body = json.dumps(payment("pay_1", 1250)).encode()
        headers = sign_standard_webhooks(DEMO_SECRET, "msg_1", int(time.time()), body)
        hook = httpx.post(
            f"{url}/hooks/payments",
            content=body,
            headers={**headers, "content-type": "application/json"},
        )
        unsigned = httpx.post(f"{url}/hooks/payments", content=body)
    finally:
        output = stop(process)
    assert order.status_code == 200
    assert order.json() == {
        "order_id": "42",
        "status": "shipped",
        "tenant": "acme",
        "served_by": "example-upstream",
    }
    assert created.status_code == 201
    assert created.json()["order"] == {"item": "book"}
    assert hook.status_code == 202, hook.text
    assert unsigned.status_code == 401
    assert process.returncode == 0, output
    assert "serving 3 routes to 1 upstream " in output


def test_serve_finishes_in_flight_requests_on_sigterm(upstream_url: str, tmp_path: Path) -> None:
    """SIGTERM stops accepting, lets a slow request finish, closes pools, then exits.

    Like uvicorn, the server re-raises the signal once drained, so a supervisor sees that
    SIGTERM ended it (status -15)."""
    config = tmp_path / "routes.yaml"
    config.write_text(
        f"""
version: 1
server: {{drain_timeout: 10s}}
upstreams:
  app: {{url: "{upstream_url}"}}
routes:
  - path: /slow
    methods: [GET]
    forward: {{upstream: app}}
"""
    )
    with serve_process(config) as served:
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(httpx.get(f"{served.url}/slow?seconds=1.5", timeout=10))
        )
        slow.start()
        time.sleep(0.5)
        served.process.send_signal(signal.SIGTERM)
        slow.join(timeout=15)
        code = served.process.wait(timeout=15)
        log = served.log_text()
    assert [a.status_code for a in answers] == [200]
    assert answers[0].json() == {"slept": 1.5}
    assert code == -signal.SIGTERM
    assert "Waiting for connections to close" in log or "Shutting down" in log
    assert "Application shutdown complete" in log


def test_embedded_consumer_example_receives_and_sends(tmp_path: Path) -> None:
    """The embedding example consumes a delivered payment and sends it on, in one process."""
    upstream_url = unused_port_url()
    upstream = start(
        [
            sys.executable,
            "-m",
            "examples.example_upstream",
            "--port",
            upstream_url.rsplit(":", 1)[1],
        ],
        {},
    )
    url = unused_port_url()
    consumer = start(
        [
            sys.executable,
            "-m",
            "examples.embedded_consumer",
            "--port",
            url.rsplit(":", 1)[1],
            "--max-messages",
            "1",
        ],
        {"EXAMPLE_UPSTREAM_URL": upstream_url},
    )
    try:
        wait_ready(url, consumer)
        body = json.dumps(payment("pay_2", 5)).encode()
        headers = sign_standard_webhooks(DEMO_SECRET, "msg_2", int(time.time()), body)
        hook = httpx.post(
            f"{url}/hooks/payments",
            content=body,
            headers={**headers, "content-type": "application/json"},
        )
        output, _ = consumer.communicate(timeout=20)
    finally:
        if consumer.poll() is None:
            consumer.kill()
        upstream.terminate()
        upstream.communicate(timeout=10)
    assert hook.status_code == 202
    assert consumer.returncode == 0, output
    assert f"payment {payment('pay_2', 5)} acknowledged upstream" in output


@pytest.mark.parametrize("arguments", [["--port", "70000"], ["--port", "0"], ["--workers", "0"]])
def test_serve_refuses_bad_port_or_workers(arguments: list[str]) -> None:
    """Ports outside 1..65535 and fewer than one worker are usage errors (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "bizproxy", "serve", "routes.yaml", *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 2
    assert "expected a" in result.stderr
