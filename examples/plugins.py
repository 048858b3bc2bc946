"""Example plug-ins that routes.yaml can name as `examples.plugins:<name>`.

A retry plug-in is called after each failed attempt with the failure and the attempt
number (1 = the first) and answers whether to try again; the policy's `attempts` still
bounds it. A throttle plug-in is called with the request's tag and answers whether to
admit the request.
"""

from __future__ import annotations

import os


def retry_on_teapot(exception: BaseException, attempt: int) -> bool:
    """Retry when the upstream answered 418, which this demo treats as "busy brewing"."""
    return getattr(exception, "status", None) == 418


def partner_allows(tag: str | None) -> bool:
    """Admit partner traffic unless its tag is listed in BIZPROXY_PAUSED_TAGS (comma-separated)."""
    listed = os.environ.get("BIZPROXY_PAUSED_TAGS", "").split(",")
    return tag not in {name.strip() for name in listed if name.strip()}
