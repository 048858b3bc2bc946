"""The contracts business code and plug-ins are written against. Nothing here holds state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

JSON = Any
"""A JSON-serialisable value: what send() posts and receive() yields."""

RetryPluginCallable = Callable[[BaseException, int], bool | Awaitable[bool]]
"""A retry plug-in: given the failure and the attempt number (1 = first), retry or not."""

ThrottlePluginCallable = Callable[[str | None], bool | Awaitable[bool]]
"""A throttle plug-in: given the tag, admit the request or not."""


@runtime_checkable
class BusinessProxyInterface(Protocol):
    """How business code talks to one upstream: send messages out, receive messages in."""

    @property
    def is_connected(self) -> bool:
        """True between a completed connect() and the next disconnect()."""
        ...

    async def connect(self) -> None:
        """Open the connection pool; idempotent."""
        ...

    async def disconnect(self) -> None:
        """Close the pool and end every receive() iterator; idempotent."""
        ...

    async def send(self, message: JSON, tag: str | None = None) -> JSON:
        """Post one message to the upstream under the tag's throttle budget; return its answer."""
        ...

    def receive(self) -> AsyncIterator[JSON]:
        """Iterate over messages delivered to this proxy until it disconnects."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
