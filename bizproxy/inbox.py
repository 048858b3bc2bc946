"""A bounded inbox: the inbound side delivers messages, business code receives them."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from bizproxy.errors import InboxFull, NotConnected

_CLOSED = object()


class Inbox:
    """Holds at most `max_messages`; a closed inbox hands out what it holds, then ends."""

    def __init__(self, max_messages: int = 1000, *, upstream: str | None = None) -> None:
        if max_messages < 1:
            raise ValueError(f"an inbox needs room for at least 1 message, got {max_messages}")
        self.max_messages = max_messages
        self.upstream = upstream
        self._messages: deque[Any] = deque()
        self._ready = asyncio.Condition()
        self._open = False

    def __len__(self) -> int:
        return len(self._messages)

    async def open(self) -> None:
        async with self._ready:
            self._open = True

    async def close(self) -> int:
        """Stop accepting, release every waiting consumer; return how many are still unread."""
        async with self._ready:
            self._open = False
            self._ready.notify_all()
            return len(self._messages)

    async def put(self, message: Any) -> str:
        """Add one message; return its id. Raise InboxFull or NotConnected at once."""
        async with self._ready:
            if not self._open:
                raise NotConnected(
                    f"upstream {self.upstream!r} is not connected; cannot deliver a message",
                    upstream=self.upstream,
                )
            if len(self._messages) >= self.max_messages:
                raise InboxFull(
                    f"inbox of upstream {self.upstream!r} is full "
                    f"({self.max_messages} messages waiting to be received)",
                    upstream=self.upstream,
                    retry_after=1.0,
                )
            self._messages.append(message)
            self._ready.notify()
        return uuid.uuid4().hex

    async def _next(self) -> Any:
        async with self._ready:
            while not self._messages and self._open:
                await self._ready.wait()
            if self._messages:
                return self._messages.popleft()
            return _CLOSED

    async def messages(self) -> AsyncIterator[Any]:
        """Yield messages until the inbox is closed and empty."""
        while True:
            message = await self._next()
            if message is _CLOSED:
                return
            yield message
