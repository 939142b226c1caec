"""Reads on the read replicas, and read-your-writes (README: "Read replicas and a connection
pooler"): after a user's write (a session opened or ended, an ignore, a favorite added or removed),
the WAL position it reached is kept for that user, in Redis when REDIS_URL is set, so that every API
replica honours it, and in the process too. Until a replica has replayed that far, the user's reads
go to the primary."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
import math
import time
from typing import TypeVar

from aiohttp import web
from prometheus_client import Counter
from redis.asyncio import Redis

from core import db
from core.replicas import Databases
from service.keys import DATABASES, SETTINGS
from service.redis_store import REDIS, FailOpen

Result = TypeVar("Result")

STORE_ERRORS = Counter(
    "commons_users_written_positions_errors_total",
    "Calls to Redis for users' last write positions that failed or timed out; those users' reads went to the primary.",
)

# Keep the larger of the stored position and ARGV[1] (a user may write on two API replicas at
# once), for ARGV[2] ms from now.
_KEEP_LARGER = """
local stored = tonumber(redis.call('GET', KEYS[1]))
if stored == nil or stored < tonumber(ARGV[1]) then
  return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


class _InProcess:
    """Positions kept for `ttl` seconds, the oldest first so that expired ones are dropped in order."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def keep(self, user_id: str, position: int) -> None:
        now = time.monotonic()
        while self._entries and next(iter(self._entries.values()))[1] <= now:
            self._entries.popitem(last=False)
        previous = self._entries.pop(user_id, (position, 0.0))[0]
        self._entries[user_id] = (max(previous, position), now + self._ttl)

    def get(self, user_id: str) -> int | None:
        entry = self._entries.get(user_id)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else None


class WrittenPositions:
    """Each user's last write position, kept while a replica that keeps up could still lack it: the
    most lag a replica may have, plus two checks (its lag is known as of its last check)."""

    def __init__(self, databases: Databases, redis: Redis | None, *, ttl: float, key_prefix: str, timeout: float):
        self._databases = databases
        self._redis = redis
        self._ttl_ms = math.ceil(ttl * 1000)
        self._prefix = key_prefix
        self._local = _InProcess(ttl)
        self._store = FailOpen(timeout, STORE_ERRORS, "written positions", "reads of those users go to the primary")

    async def wrote(self, user_id: str) -> None:
        """Call after the user's write has committed."""
        if not self._databases.replicas:
            return
        position = await self._databases.wal_end()
        self._local.keep(user_id, position)
        if (redis := self._redis) is not None:
            key = self._prefix + user_id
            await self._store.call(lambda: redis.eval(_KEEP_LARGER, 1, key, position, self._ttl_ms))

    async def replayed_by(self, user_id: str | None, replayed: int) -> bool:
        """Whether a replica that replayed up to `replayed` has the user's last write. Not for an
        unknown user (an unknown session may be one opened a moment ago), nor when Redis fails."""
        if user_id is None:
            return False
        local = self._local.get(user_id)
        if local is not None and local > replayed:
            return False
        if (redis := self._redis) is None:
            return True
        found = await self._store.call(lambda: _get(redis, self._prefix + user_id))
        return found is not None and (found[0] is None or int(found[0]) <= replayed)


async def _get(redis: Redis, key: str) -> tuple[bytes | str | None]:
    return (await redis.get(key),)  # a tuple, to tell a missing key from a failed call


WRITTEN = web.AppKey("written positions", WrittenPositions)


async def written_positions(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context, after the database and Redis."""
    settings = app[SETTINGS]
    app[WRITTEN] = WrittenPositions(
        app[DATABASES],
        app.get(REDIS),
        ttl=settings.database_replica_max_lag_seconds + 2 * settings.database_replica_check_seconds,
        key_prefix=settings.written_positions_key_prefix,
        timeout=settings.redis_timeout_seconds,
    )
    yield


async def read(
    request: web.Request, work: Callable[[db.Queryable], Awaitable[Result]], user_of: Callable[[Result], str | None]
) -> Result:
    """`work`'s result from a read replica that has the user's last write, else from the primary;
    `user_of` names the user a result was read for (None: unknown, so read on the primary)."""
    written = request.app[WRITTEN]

    async def serves(result: Result, replayed: int) -> bool:
        return await written.replayed_by(user_of(result), replayed)

    return await request.app[DATABASES].read(work, serves)


async def wrote(request: web.Request, user_id: str) -> None:
    """After a user's write has committed: their reads stay on the primary until a replica has it."""
    await request.app[WRITTEN].wrote(user_id)
