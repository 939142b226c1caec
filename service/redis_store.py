"""The Redis that every API replica shares when REDIS_URL is set: the rate limit's counters and
each user's count of live update streams. Redis never stops the API: a call that fails, or takes
longer than REDIS_TIMEOUT_SECONDS, is answered as if there were no Redis (README: "Rate limit")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import logging
import math
import time
from typing import TypeVar

from aiohttp import web
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.settings import redact_dsn
from service.keys import SETTINGS

log = logging.getLogger(__name__)

Result = TypeVar("Result")

# After Redis fails, calls skip it this long, so that a hanging Redis delays few requests.
RETRY_AFTER_FAILURE_SECONDS = 1.0
# At most one warning this often while Redis fails; the metric counts every failure.
WARN_EVERY_SECONDS = 60.0

REDIS = web.AppKey("redis", Redis)


def redis_client(url: str, timeout: float) -> Redis:
    # No retries: redis-py's default retries with backoff would outlast any short timeout.
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


async def shared_redis(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the client of REDIS_URL, when it is set."""
    settings = app[SETTINGS]
    if settings.redis_url is None:
        yield
        return
    url = settings.redis_url.get_secret_value()
    log.info("shared counts in Redis at %s", redact_dsn(url))
    app[REDIS] = redis_client(url, settings.redis_timeout_seconds)
    try:
        yield
    finally:
        await app[REDIS].aclose()


class FailOpen:
    """Calls to Redis for one purpose, each bounded by `timeout`. A failure answers None, is counted
    in `errors`, warned about at most once a minute (naming the purpose, and what the API does
    without Redis), and makes the calls of the next second skip Redis (None at once)."""

    def __init__(self, timeout: float, errors: Counter, purpose: str, fallback: str) -> None:
        self._timeout = timeout
        self._errors = errors
        self._purpose = purpose
        self._fallback = fallback
        self._skip_until = 0.0
        self._warned_at = -math.inf
        self._unwarned_failures = 0

    async def call(self, call: Callable[[], Awaitable[Result]]) -> Result | None:
        if time.monotonic() < self._skip_until:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                return await call()
        except Exception as exc:  # whatever goes wrong with the store, the request is served (README)
            self._failed(exc)
            return None

    def _failed(self, exc: Exception) -> None:
        self._errors.inc()
        now = time.monotonic()
        self._skip_until = now + RETRY_AFTER_FAILURE_SECONDS
        self._unwarned_failures += 1
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            log.warning(
                "%s store failed (%s); %s (%d failures since the last warning)",
                self._purpose,
                f"no answer within {self._timeout} s" if isinstance(exc, TimeoutError) else repr(exc),
                self._fallback,
                self._unwarned_failures,
            )
            self._warned_at, self._unwarned_failures = now, 0
