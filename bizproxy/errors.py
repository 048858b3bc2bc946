"""The exceptions bizproxy raises, all under one root.

    BusinessProxyException
     ├── ConnectionFailure         cannot reach the upstream, or the proxy is not connected
     │    ├── NotConnected         used before connect() or after disconnect()
     │    └── UpstreamTimeout      the upstream did not answer in time
     ├── RetriesExhausted          the retry policy stopped; attempts and last cause attached
     ├── Throttled                 over a throttle budget; retry_after attached
     ├── SignatureFailure          a signature is missing, wrong or stale; or upstream said 401
     ├── UpstreamError             the upstream answered send() with a 4xx/5xx status
     ├── Unavailable               bizproxy refuses at once; retry_after attached
     │    ├── InboxFull            a proxy's receive() inbox has no room
     │    ├── CircuitOpen          the upstream's breaker is open
     │    └── NoHealthyTarget      every target of the upstream is ejected
     └── ConfigError               routes.yaml is invalid; every problem attached

This module imports neither httpx nor any web framework: business code catches these
without knowing what carries its messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


class BusinessProxyException(Exception):
    """The root of every exception bizproxy raises on purpose."""

    def __init__(self, message: str, *, upstream: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.upstream = upstream

    def __str__(self) -> str:
        return self.message


ConnectionFailureKind = Literal["connect-error", "timeout", "reset", "protocol", "not-connected"]


class ConnectionFailure(BusinessProxyException):
    """Raised when the upstream cannot be reached or the proxy is not connected.

    `kind` names what failed (a retry policy's `retry_on` uses the same words), and
    `reached_upstream` is False only when the request certainly never left this process.
    """

    def __init__(
        self,
        message: str,
        *,
        upstream: str | None = None,
        kind: ConnectionFailureKind = "connect-error",
        reached_upstream: bool = False,
    ) -> None:
        super().__init__(message, upstream=upstream)
        self.kind: ConnectionFailureKind = kind
        self.reached_upstream = reached_upstream


class NotConnected(ConnectionFailure):
    """Raised when a proxy is used before connect() or after disconnect()."""

    def __init__(self, message: str, *, upstream: str | None = None) -> None:
        super().__init__(message, upstream=upstream, kind="not-connected")


class UpstreamTimeout(ConnectionFailure):
    """Raised when the upstream did not connect, answer or accept the body in time."""

    def __init__(
        self,
        message: str,
        *,
        upstream: str | None = None,
        phase: Literal["connect", "read", "write", "pool", "deadline"] = "read",
    ) -> None:
        # Only a connect or pool timeout proves that nothing was sent.
        reached = phase not in ("connect", "pool")
        super().__init__(message, upstream=upstream, kind="timeout", reached_upstream=reached)
        self.phase = phase


class RetriesExhausted(BusinessProxyException):
    """Raised when the retry policy gives up; carries the attempt count and last cause."""

    def __init__(
        self,
        message: str,
        *,
        upstream: str | None = None,
        attempts: int,
        last_cause: BaseException | None,
    ) -> None:
        super().__init__(message, upstream=upstream)
        self.attempts = attempts
        self.last_cause = last_cause


class Throttled(BusinessProxyException):
    """Raised when a request is over its tag's throttle budget."""

    def __init__(
        self,
        message: str,
        *,
        tag: str | None,
        retry_after: float | None = None,
        upstream: str | None = None,
    ) -> None:
        super().__init__(message, upstream=upstream)
        self.tag = tag
        self.retry_after = retry_after


class SignatureFailure(BusinessProxyException):
    """Raised when a signature is missing, wrong or stale, or the upstream answered 401."""


class UpstreamError(BusinessProxyException):
    """Raised when the upstream answered send() with a 4xx or 5xx status."""

    def __init__(
        self,
        message: str,
        *,
        upstream: str | None = None,
        status: int,
        body: bytes = b"",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, upstream=upstream)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class Unavailable(BusinessProxyException):
    """Raised when bizproxy refuses a request at once instead of queueing it."""

    def __init__(
        self, message: str, *, upstream: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, upstream=upstream)
        self.retry_after = retry_after


class InboxFull(Unavailable):
    """Raised by deliver() when the proxy's bounded inbox has no room."""


class CircuitOpen(Unavailable):
    """Raised when the upstream's circuit breaker is open."""


class NoHealthyTarget(Unavailable):
    """Raised when every target of an upstream is ejected."""


Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class ConfigProblem:
    """One thing wrong in a config file, with the place of the value at fault."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: Severity = field(default="error", compare=False)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        prefix = f"{where}: {self.path}: " if self.path else f"{where}: "
        label = "warning: " if self.severity == "warning" else ""
        return f"{prefix}{label}{self.message}"


class ConfigError(BusinessProxyException):
    """Raised when a config is invalid; holds every problem found, not only the first."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = sorted(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        count = len(errors)
        lines = "\n".join(str(p) for p in errors)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid config: {count} {noun}\n{lines}")
