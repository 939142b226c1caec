"""Streaming read replicas: which database serves a read that may be slightly stale (README: "Read
replicas and a connection pooler"). Each replica's reach, replay position and lag are checked in
the background, so that no request waits on a replica that is down or behind; a read that fails on
a replica runs again on the primary."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
import logging
import math
import random
from typing import TypeVar

import asyncpg
from prometheus_client import Counter, Gauge
from yarl import URL

from core import db

log = logging.getLogger(__name__)

Result = TypeVar("Result")

READS = Counter(
    "commons_users_db_reads_total", "Reads that may be slightly stale, by the database that served them.", ["target"]
)
READS_BEHIND = Counter(
    "commons_users_db_reads_behind_total",
    "Reads served by the primary, after a replica, because that replica had not replayed the user's last write.",
)
REPLICA_LAG = Gauge(
    "commons_users_db_replica_lag_seconds",
    "Each read replica's replay lag at its last check: +Inf while it is out of reach.",
    ["replica"],
)

# WAL positions as numbers: where the primary's WAL ends (a write made before is at or below it),
# and what a replica has replayed, with how long ago it replayed its last transaction.
_WAL_END = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
_REPLAYED = """
SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replayed,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS since_last_transaction
"""


@dataclass(eq=False)
class Replica:
    pool: asyncpg.Pool
    name: str  # host:port/database, for logs and metrics
    replayed: int = -1  # the WAL position it had replayed at its last check
    lag: float = math.inf  # seconds behind the primary at its last check; inf while out of reach

    def checked(self, replayed: int, lag: float) -> None:
        if not math.isfinite(self.lag):
            log.info("read replica %s serves reads (%.1f s behind)", self.name, lag)
        self.replayed, self.lag = replayed, lag
        REPLICA_LAG.labels(self.name).set(lag)

    def lost(self, reason: str) -> None:
        if math.isfinite(self.lag):
            log.warning("read replica %s skipped: %s", self.name, reason)
        self.lag = math.inf
        REPLICA_LAG.labels(self.name).set(math.inf)


def replica_name(dsn: str) -> str:
    url = URL(dsn)
    return f"{url.host}:{url.port or 5432}{url.path}"


class Databases:
    """The primary, which takes every write and every read that must be current, and the read
    replicas, which take the reads that may be slightly stale while they keep up."""

    def __init__(self, primary: asyncpg.Pool, replicas: Sequence[Replica], *, max_lag: float) -> None:
        self.primary = primary
        self.replicas = list(replicas)
        self.max_lag = max_lag

    async def wal_end(self) -> int:
        """Where the primary's WAL ends now: a replica that replayed this far has every write
        committed before."""
        position: int = await self.primary.fetchval(_WAL_END)
        return position

    async def read(
        self,
        work: Callable[[db.Queryable], Awaitable[Result]],
        serves: Callable[[Result, int], Awaitable[bool]],
    ) -> Result:
        """`work`'s result, from a replica that keeps up when one does and when `serves(result,
        replayed)` accepts what a replica that had replayed that far read; else from the primary.
        A replica out of reach (or one that cancels the read to replay) is skipped: the read runs
        again on the primary, and the replica waits for its next check."""
        replica = self._choose()
        if replica is not None:
            replayed = replica.replayed
            try:
                result = await work(replica.pool)
            except Exception as exc:
                if not (db.out_of_reach(exc) or isinstance(exc, asyncpg.SerializationError)):
                    raise
                replica.lost(repr(exc))
            else:
                if await serves(result, replayed):
                    READS.labels("replica").inc()
                    return result
                READS_BEHIND.inc()
        READS.labels("primary").inc()
        return await work(self.primary)

    def _choose(self) -> Replica | None:
        keeping_up = [replica for replica in self.replicas if replica.lag <= self.max_lag]
        return random.choice(keeping_up) if keeping_up else None

    async def check_forever(self, every: float) -> None:
        """Check every replica every `every` seconds, each check bounded by as long, and at least
        a second: a check more frequent than that is no reason to give up on a replica sooner."""
        within = max(every, 1.0)
        while True:
            await asyncio.gather(*(self._check(replica, within) for replica in self.replicas))
            await asyncio.sleep(every)

    async def _check(self, replica: Replica, within: float) -> None:
        try:
            async with asyncio.timeout(within):
                wal_end: int | None = await self.wal_end()
        except Exception:  # the primary's own trouble shows elsewhere: judge the replica by its clock
            wal_end = None
        try:
            async with asyncio.timeout(within):
                row = await replica.pool.fetchrow(_REPLAYED)
        except Exception as exc:
            replica.lost(f"no answer within {within} s" if isinstance(exc, TimeoutError) else repr(exc))
            return
        assert row is not None
        if row["replayed"] is None:
            replica.lost("not a standby (it replays no WAL)")
        elif wal_end is not None and row["replayed"] >= wal_end:
            replica.checked(row["replayed"], 0.0)
        else:
            # Behind: as far behind as its last replayed transaction is old.
            replica.checked(row["replayed"], max(row["since_last_transaction"] or math.inf, 0.0))


async def open_replicas(dsns: Sequence[str], make_pool: Callable[[str], Awaitable[asyncpg.Pool]]) -> list[Replica]:
    """A replica for each URL, its pool connecting only when used (its first check)."""
    return [Replica(await make_pool(dsn), replica_name(dsn)) for dsn in dsns]
