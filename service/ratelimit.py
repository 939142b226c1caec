"""The per-user request limit (README: "Rate limit"): a counter per user, or per client address
where no user is known, over a window of an hour; in Redis, shared by every replica, or in this
process. A failing or slow Redis never stops the API: requests are then served uncounted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
import logging
import math
import time
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Counter
from redis.asyncio import Redis

from core.errors import TooManyRequests
from service.auth import checked_in_statement, needs_session
from service.keys import SESSION, SETTINGS
from service.proxies import client
from service.redis_store import REDIS, FailOpen

log = logging.getLogger(__name__)

WINDOW_SECONDS = 3600
POLICY_NAME = "hourly"
# Public routes counted per client address (no user is known there). Other public routes are
# probes, metrics and the OpenAPI document: answered from memory, cheaper than counting them.
BY_ADDRESS = frozenset({("POST", "/api/sessions")})
STORE_ERRORS = Counter(
    "commons_users_rate_limit_store_errors_total",
    "Calls to the rate limit store (Redis) that failed or timed out; their requests were served uncounted.",
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One request counted: the requests of its window so far, itself included, and the seconds
    until the window ends."""

    count: int
    reset_seconds: float


class WindowCounter(Protocol):
    async def hit(self, key: str) -> Hit | None:
        """Count a request under `key`; None when the count is unknown (the store failed)."""


class LocalCounter:
    """Windows kept in this process: each replica counts on its own."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key: (count, end)
        self._next_sweep = clock() + window_seconds

    async def hit(self, key: str) -> Hit:
        now = self._clock()
        if now >= self._next_sweep:  # forget ended windows, so memory follows the active keys
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            self._next_sweep = now + self._window
        count, end = self._windows.get(key, (0, 0.0))
        if end <= now:
            count, end = 0, now + self._window
        self._windows[key] = (count + 1, end)
        return Hit(count + 1, end - now)


# One script, so the increment and the window's expiry are atomic: no replica ever sees a counter
# without an expiry (one that would never reset). A key without one (-1) gets it, whatever the cause.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RedisCounter:
    """Windows kept in Redis, shared by every replica; a count that Redis fails to give is None
    (service/redis_store.py)."""

    def __init__(self, client: Redis, window_seconds: int, timeout: float) -> None:
        self._script = client.register_script(_HIT_SCRIPT)
        self._window_ms = window_seconds * 1000
        self._store = FailOpen(timeout, STORE_ERRORS, "rate limit", "serving requests uncounted")

    async def hit(self, key: str) -> Hit | None:
        answer = await self._store.call(lambda: self._script(keys=[key], args=[self._window_ms]))
        if answer is None:
            return None
        count, ttl_ms = answer
        return Hit(int(count), int(ttl_ms) / 1000)


@dataclass(frozen=True)
class RateLimiter:
    counter: WindowCounter
    limit: int
    key_prefix: str

    @property
    def policy(self) -> str:
        """The RateLimit-Policy field of draft-ietf-httpapi-ratelimit-headers-11 (section 3): a
        String item naming the policy, `q` its quota and `w` its window in seconds."""
        return f'"{POLICY_NAME}";q={self.limit};w={WINDOW_SECONDS}'


# Here rather than in service/keys.py, which cannot import this module: it imports service.keys.
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("rate_limit_headers")


async def rate_limiter(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the limiter and its counter, absent when RATE_LIMIT_PER_HOUR is 0."""
    settings = app[SETTINGS]
    if settings.rate_limit_per_hour == 0:
        log.info("rate limit: off")
        yield
        return
    counter: WindowCounter
    if (redis := app.get(REDIS)) is None:
        counter, where = LocalCounter(WINDOW_SECONDS), "in this process (per replica)"
    else:
        counter, where = RedisCounter(redis, WINDOW_SECONDS, settings.redis_timeout_seconds), "in Redis"
    log.info("rate limit: %d requests an hour, counted %s", settings.rate_limit_per_hour, where)
    app[RATE_LIMITER] = RateLimiter(counter, settings.rate_limit_per_hour, settings.rate_limit_key_prefix)
    yield


def identity(request: web.Request) -> str | None:
    """Whom a request is counted against: the session's user on routes that need a session, the
    client address on BY_ADDRESS routes; None for the rest, which are not limited."""
    if needs_session(request):
        return None if checked_in_statement(request) else "user:" + request[SESSION].user_id
    resource = request.match_info.route.resource  # None for a request that matches no route
    if resource is not None and (request.method, resource.canonical) in BY_ADDRESS:
        return "address:" + client(request).address
    return None


async def count(request: web.Request, who: str) -> None:
    """Count a request against `who`; past the limit, refuse it (429). Its answer, whatever it
    is, then carries the RateLimit-Policy and (when the count is known) RateLimit fields."""
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return
    headers = {"RateLimit-Policy": limiter.policy}
    request[_HEADERS] = headers  # added by add_headers, also to problems raised by the handler
    hit = await limiter.counter.hit(limiter.key_prefix + who)
    if hit is None:
        return
    remaining, reset = max(limiter.limit - hit.count, 0), min(max(math.ceil(hit.reset_seconds), 1), WINDOW_SECONDS)
    # draft-ietf-httpapi-ratelimit-headers-11, section 4: `r` the quota left, `t` the seconds it holds for.
    headers["RateLimit"] = f'"{POLICY_NAME}";r={remaining};t={reset}'
    if hit.count > limiter.limit:
        # Retry-After no earlier than the window's end (the draft, section 6).
        raise TooManyRequests(
            f"More than {limiter.limit} requests in an hour; retry in {reset} seconds.",
            headers={"Retry-After": str(reset)},
        )


async def count_user(request: web.Request, user_id: str) -> None:
    """Count a request against its session's user, where a statement found the session."""
    await count(request, "user:" + user_id)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request against whom `identity` names. Runs after the session middleware, so a
    request refused 401 is never counted; on routes whose statement checks the session, the
    handler counts it (count_user) once the statement has found the session."""
    if (who := identity(request)) is not None:
        await count(request, who)
    return await handler(request)


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the rate limit fields on every answer of a limited route, including
    the problems that the outer problem middleware makes of exceptions."""
    if (headers := request.get(_HEADERS)) is not None:
        response.headers.update(headers)
