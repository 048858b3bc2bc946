"""Token buckets on a Redis server, so several workers and instances share one budget.

Each decision is one Lua script run on the server (EVALSHA, loaded again on NOSCRIPT),
so concurrent takes from any number of processes are serialised by Redis and measured
against the server's own clock (`TIME`): no two hosts need agree on the time. The
bucket is the same GCRA form as the memory store, one key per bucket, expiring when the
bucket is full again.

When Redis cannot be reached the store decides alone, by `on_failure`: "open" admits,
"closed" refuses with a short retry-after. It logs one WARNING when an outage starts and
one INFO when it ends, and skips Redis for `retry_interval_seconds` after each failure,
so a dead server costs one connection attempt per interval rather than one per request.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Literal

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from bizproxy.policies.throttle_store import Clock, check_budget

logger = logging.getLogger("bizproxy.throttle")

OnFailure = Literal["open", "closed"]

# KEYS[1]: the bucket. ARGV[1]: seconds per token. ARGV[2]: burst.
# Returns "0" when admitted, else the seconds until a token, as a string: Redis would
# truncate a Lua number to an integer. '%.17g' keeps every digit of a double.
TAKE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local backlog = math.max(tat - now, 0)
local wait = backlog - (burst - 1) * interval
local new_tat = now + backlog + interval
if wait > 0 then
  return string.format('%.17g', wait)
end
local ttl_ms = math.max(1, math.ceil((backlog + interval) * 1000))
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl_ms)
return '0'
"""

TAKE_SCRIPT_SHA = hashlib.sha1(TAKE_SCRIPT.encode()).hexdigest()


class RedisThrottleStore:
    """Token buckets shared through one Redis server.

    Read by the metrics layer: `outage` (True while Redis is unreachable),
    `failures_total` (Redis calls that failed) and `fallbacks_total` (decisions taken
    by `on_failure` instead of by Redis).
    """

    def __init__(
        self,
        url: str,
        *,
        on_failure: OnFailure = "open",
        key_prefix: str = "bizproxy:throttle:",
        timeout_seconds: float = 0.25,
        retry_interval_seconds: float = 1.0,
        refused_retry_after_seconds: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if on_failure not in ("open", "closed"):
            raise ValueError(f"on_failure must be 'open' or 'closed', got {on_failure!r}")
        self.on_failure: OnFailure = on_failure
        self.key_prefix = key_prefix
        self.retry_interval_seconds = retry_interval_seconds
        self.refused_retry_after_seconds = refused_retry_after_seconds
        self._clock = clock

        # No client-side retries: a failed call falls back at once, and the next call
        # after the retry interval is the reconnection attempt.
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )
        self.server = _describe(self._client)

        self.outage = False
        self.failures_total = 0
        self.fallbacks_total = 0
        self._outage_started = 0.0
        self._skip_until = float("-inf")

    def __repr__(self) -> str:
        return f"RedisThrottleStore(server={self.server!r}, on_failure={self.on_failure!r})"

    async def take(self, key: str, rate_per_second: float, burst: int) -> float:
        """Take one token from the bucket `key`; 0.0 if admitted, else seconds to wait."""
        check_budget(rate_per_second, burst)
        now = self._clock()
        if now < self._skip_until:
            return self._fall_back()

        if self.outage:
            # One caller probes; the others keep falling back while it does.
            self._skip_until = now + self.retry_interval_seconds
        try:
            reply = await self._run(self.key_prefix + key, 1.0 / rate_per_second, burst)
        except (RedisError, OSError) as err:
            self._record_failure(err)
            return self._fall_back()

        if self.outage:
            self._record_recovery()
        return float(reply)

    async def close(self) -> None:
        """Close the connection pool; idempotent."""
        await self._client.aclose()

    async def _run(self, key: str, interval: float, burst: int) -> Any:
        args = (key, repr(interval), str(burst))
        try:
            return await self._client.evalsha(TAKE_SCRIPT_SHA, 1, *args)
        except NoScriptError:
            await self._client.script_load(TAKE_SCRIPT)
            return await self._client.evalsha(TAKE_SCRIPT_SHA, 1, *args)

    def _fall_back(self) -> float:
        self.fallbacks_total += 1
        return 0.0 if self.on_failure == "open" else self.refused_retry_after_seconds

    def _record_failure(self, err: BaseException) -> None:
        now = self._clock()
        self.failures_total += 1
        self._skip_until = now + self.retry_interval_seconds
        if self.outage:
            return

        self.outage = True
        self._outage_started = now
        verdict = "admitting" if self.on_failure == "open" else "refusing"
        logger.warning(
            "throttle store Redis at %s failed (%s: %s); %s throttled requests "
            "until it answers again",
            self.server,
            type(err).__name__,
            err,
            verdict,
        )

    def _record_recovery(self) -> None:
        self.outage = False
        self._skip_until = float("-inf")
        logger.info(
            "throttle store Redis at %s answers again after %.1f s unreachable",
            self.server,
            self._clock() - self._outage_started,
        )


def _describe(client: redis.Redis) -> str:
    """host:port/db of the client, never its URL: a URL may carry a password."""
    options = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"unix:{options['path']}/{options.get('db', 0)}"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{options.get('db', 0)}"
