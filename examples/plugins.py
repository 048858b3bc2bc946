"""Example plug-ins that routes.yaml can name as `examples.plugins:<name>`.

A retry plug-in is called after each failed attempt with the failure and the attempt
number (1 = the first) and answers whether to try again; the policy's `attempts`,
backoff, deadline, budget and idempotency rules still bound it. A throttle plug-in is
called with the request's tag and answers whether to admit the request. Either may be
a plain function or a coroutine function; bizproxy awaits the latter.
"""

from __future__ import annotations

import asyncio
import os


def retry_on_teapot(exception: BaseException, attempt: int) -> bool:
    """Retry when the upstream answered 418, which this demo treats as "busy brewing"."""
    return getattr(exception, "status", None) == 418


async def retry_while_unavailable(exception: BaseException, attempt: int) -> bool:
    """Retry a 503 twice at most, whatever the policy's attempts allow."""
    await asyncio.sleep(0)  # where a real plug-in might ask a service before deciding
    return getattr(exception, "status", None) == 503 and attempt <= 2


def partner_allows(tag: str | None) -> bool:
    """Admit partner traffic unless its tag is listed in BIZPROXY_PAUSED_TAGS (comma-separated)."""
    listed = os.environ.get("BIZPROXY_PAUSED_TAGS", "").split(",")
    return tag not in {name.strip() for name in listed if name.strip()}


async def partner_allows_async(tag: str | None) -> bool:
    """The same decision as `partner_allows`, as a coroutine function."""
    await asyncio.sleep(0)
    return partner_allows(tag)
