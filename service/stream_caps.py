"""The caps on live update streams (README: "Live updates"): UPDATE_STREAM_MAX_STREAMS on each
replica, and UPDATE_STREAM_MAX_PER_USER for each user, counted in Redis on every replica together
when REDIS_URL is set; in this process otherwise, and whenever Redis fails (then the user's cap
holds per replica)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
import contextlib
import itertools
from uuid import uuid4

from aiohttp import web
from prometheus_client import Counter
from redis.asyncio import Redis

from core.errors import TooManyStreams, Unavailable
from core.settings import Settings
from service.keys import SETTINGS
from service.redis_store import REDIS, FailOpen

# A stream's entry in Redis lasts this long unless its replica renews it, which it does every
# third of it: the entries of a replica that was killed are gone within a minute.
LEASE_SECONDS = 60
RENEW_EVERY_SECONDS = LEASE_SECONDS / 3
# Users whose entries one call renews.
_RENEWED_AT_ONCE = 500

# Retry-After of a stream refused: past the user's cap (a stream of theirs must end first), and
# from a full replica (a retry may reach another one).
USER_CAP_RETRY_SECONDS = 30
FULL_REPLICA_RETRY_SECONDS = 1

REFUSED_STREAMS = Counter("commons_users_update_streams_refused_total", "Live update streams refused, by cap.", ["cap"])
STORE_ERRORS = Counter(
    "commons_users_update_stream_store_errors_total",
    "Calls to Redis counting live update streams that failed or timed out; streams were then counted per replica.",
)

# A user's streams are a sorted set of entries, each scored by when it lapses (Redis's clock). One
# script forgets the lapsed ones, counts the others and adds one under the cap, atomically.
_NOW_MS = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)"
_TAKE = f"""
{_NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_RENEW = f"""
{_NOW_MS}
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""


class StreamCounts:
    """The streams this replica holds, by user, and each one's entry in Redis."""

    def __init__(self, limit: int, redis: Redis | None, key_prefix: str, timeout: float) -> None:
        self._limit = limit
        self._key_prefix = key_prefix
        self._held: defaultdict[str, set[str]] = defaultdict(set)
        replica = uuid4().hex
        self._entries = (f"{replica}:{n}" for n in itertools.count())
        self._redis = redis
        if redis is not None:
            self._take = redis.register_script(_TAKE)
            self._renew = redis.register_script(_RENEW)
        self._store = FailOpen(timeout, STORE_ERRORS, "stream count", "counting each user's streams per replica")

    async def take(self, user_id: str) -> str | None:
        """An entry for one more stream of the user; None when the user holds the most allowed."""
        if len(self._held.get(user_id, ())) >= self._limit:
            return None
        entry = next(self._entries)
        if self._redis is not None:
            lease_ms = LEASE_SECONDS * 1000
            args: list[int | str] = [self._limit, lease_ms, entry]
            taken = await self._store.call(lambda: self._take(keys=[self._key(user_id)], args=args))
            if taken == 0:
                return None
        self._held[user_id].add(entry)
        return entry

    async def give_back(self, user_id: str, entry: str) -> None:
        entries = self._held[user_id]
        entries.discard(entry)
        if not entries:
            del self._held[user_id]
        if (redis := self._redis) is not None:
            await self._store.call(lambda: redis.zrem(self._key(user_id), entry))

    async def renew_forever(self) -> None:
        """Keep the entries of the streams held here from lapsing, until cancelled."""
        if (redis := self._redis) is None:
            return
        lease_ms = LEASE_SECONDS * 1000
        while True:
            await asyncio.sleep(RENEW_EVERY_SECONDS)
            users = [(user, list(entries)) for user, entries in self._held.items()]
            for start in range(0, len(users), _RENEWED_AT_ONCE):

                async def renew(batch: list[tuple[str, list[str]]] = users[start : start + _RENEWED_AT_ONCE]) -> None:
                    async with redis.pipeline(transaction=False) as pipe:
                        for user, entries in batch:
                            await self._renew(keys=[self._key(user)], args=[lease_ms, *entries], client=pipe)
                        await pipe.execute()

                await self._store.call(renew)

    def _key(self, user_id: str) -> str:
        return self._key_prefix + user_id


class StreamCaps:
    """The streams this replica admitted, and each user's count."""

    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self._settings = settings
        self.counts = StreamCounts(
            settings.update_stream_max_per_user,
            redis,
            settings.update_stream_key_prefix,
            settings.redis_timeout_seconds,
        )
        self._admitted = 0

    @contextlib.asynccontextmanager
    async def admitted(self, user_id: str) -> AsyncIterator[None]:
        """Room for one more stream of the user, for the block; Unavailable (503) from a full
        replica, TooManyStreams (429) past the user's cap."""
        settings = self._settings
        if self._admitted >= settings.update_stream_max_streams:
            REFUSED_STREAMS.labels("replica").inc()
            raise Unavailable(
                f"This replica holds the most live update streams it may ({settings.update_stream_max_streams}).",
                headers={"Retry-After": str(FULL_REPLICA_RETRY_SECONDS)},
            )
        entry = await self.counts.take(user_id)
        if entry is None:
            REFUSED_STREAMS.labels("user").inc()
            raise TooManyStreams(
                f"You hold the most live update streams allowed at once ({settings.update_stream_max_per_user}); "
                "close one first.",
                headers={"Retry-After": str(USER_CAP_RETRY_SECONDS)},
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1
            await self.counts.give_back(user_id, entry)


STREAM_CAPS = web.AppKey("stream_caps", StreamCaps)


async def stream_caps(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the caps, and the renewal of this replica's entries in Redis."""
    caps = app[STREAM_CAPS] = StreamCaps(app[SETTINGS], app.get(REDIS))
    renewing = asyncio.create_task(caps.counts.renew_forever())
    yield
    renewing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await renewing
