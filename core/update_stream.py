"""The changes of available updates, as the live update stream reads them (README: "Live updates").

Every writer of `available_updates` goes through `updates.refresh`, whose statement stages, per
resource and chunk of at most `updates.CHANGE_CHUNK_USERS` users, the users whose update it
changed. When the transaction commits, PostgreSQL numbers those rows in commit order and notifies
`CHANGES_CHANNEL` (sql/migrations/20261128180000_update_stream.sql): a reader that has read up to
position N has read every change committed up to N, and can go on from N at any time.

Each update written, and the tombstone of each update removed, names the change that wrote it
(the transaction and the chunk), so that a reconnection's replay reads the user's own rows and
looks their changes up by key: its cost follows that user's updates, never everyone's changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
import logging

import asyncpg

from core.db import Connection, Queryable
from core.updates import UPDATE_DOCUMENT

log = logging.getLogger(__name__)

CHANGES_CHANNEL = "commons_users_update_changes"
# The lock under which the trigger numbers a transaction's changes until it commits.
_COMMIT_ORDER_LOCK = 7256120301
# The lock a pruner holds, so that the API replicas and the consumers prune one at a time.
_PRUNE_LOCK = 7256120302
# How often each of them prunes.
PRUNE_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class Change:
    """What one committed change says: these users' updates for this resource changed."""

    position: int
    resource_id: str
    user_ids: Sequence[str]


@dataclass(frozen=True)
class Event:
    """One event of a user's stream: the update as `GET .../updates/{resourceId}` shows it, as
    JSON text, or None when the user no longer has one."""

    position: int
    resource_id: str
    document: str | None


_LAST_NUMBERED = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM update_changes_position_seq"


async def current_position(conn: Connection) -> int:
    """The position of the last committed change (0 before the first). Read under the trigger's
    lock, so that no change numbered at or before it is still committing."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _COMMIT_ORDER_LOCK)
        position: int = await conn.fetchval(_LAST_NUMBERED)
    return position


async def last_numbered(conn: Queryable) -> int:
    """The last position given to a change, committed or about to be: no event ever carries a
    higher one."""
    position: int = await conn.fetchval(_LAST_NUMBERED)
    return position


async def changes_after(conn: Connection, position: int, users: int) -> list[Change]:
    """The changes committed after `position`, in order, as many as name at most `users` users in
    all (always one, however many it names: at most `updates.CHANGE_CHUNK_USERS`), and at most
    100."""
    rows = await conn.fetch(
        """
        SELECT c.position, c.resource_id, c.user_ids
        FROM (
            SELECT position, sum(user_count) OVER (ORDER BY position ROWS UNBOUNDED PRECEDING) - user_count AS before
            FROM update_changes WHERE position > $1 ORDER BY position LIMIT 100
        ) taken
        JOIN update_changes c ON c.position = taken.position
        WHERE taken.before < $2
        ORDER BY c.position
        """,
        position,
        users,
    )
    return [Change(row["position"], row["resource_id"], row["user_ids"]) for row in rows]


# The update of each (user, resource) pair, as the API shows it, or NULL.
_DOCUMENTS = f"""
SELECT p.user_id, p.resource_id, ({UPDATE_DOCUMENT}) AS document
FROM unnest($1::text[], $2::text[]) AS p(user_id, resource_id)
LEFT JOIN available_updates a ON a.user_id = p.user_id AND a.resource_id = p.resource_id
"""


async def documents(conn: Connection, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """The update each (user, resource) pair has now, or None."""
    if not pairs:
        return {}
    rows = await conn.fetch(_DOCUMENTS, [user for user, _ in pairs], [resource for _, resource in pairs])
    return {(row["user_id"], row["resource_id"]): row["document"] for row in rows}


# The user's changes in ($2, $3]: each of the user's updates and tombstones points to the change
# that wrote it, found by its key; the last change of each resource, with the update as it stands
# now. Lateral lookups with LIMIT, so that the plan is a nested loop over the user's own rows
# whatever the statistics say (tests/core/test_replay_plan.py).
_REPLAY = f"""
SELECT latest.position, latest.resource_id, ({UPDATE_DOCUMENT}) AS document
FROM (
    SELECT DISTINCT ON (mine.resource_id) c.position, mine.resource_id
    FROM (
        SELECT resource_id, changed_by AS by, change_chunk AS chunk
        FROM available_updates WHERE user_id = $1 AND changed_by IS NOT NULL
        UNION ALL
        SELECT resource_id, removed_by, change_chunk FROM removed_updates WHERE user_id = $1
    ) mine
    CROSS JOIN LATERAL (
        SELECT position FROM update_changes
        WHERE staged_by = mine.by AND resource_id = mine.resource_id AND chunk = mine.chunk
        LIMIT 1
    ) c
    WHERE c.position > $2 AND c.position <= $3
    ORDER BY mine.resource_id, c.position DESC
) latest
LEFT JOIN available_updates a ON a.user_id = $1 AND a.resource_id = latest.resource_id
ORDER BY latest.position
"""


async def replay(conn: Queryable, user_id: str, after: int, upto: int) -> list[Event] | None:
    """The user's changes in (`after`, `upto`], one event per resource at its last change, as the
    updates stand now; None when some of them were pruned, so that the client reloads its list
    instead."""
    if after > upto:
        return None
    if after < upto:
        oldest = await conn.fetchval("SELECT min(position) FROM update_changes")
        if oldest is None or oldest > after + 1:
            return None
    rows = await conn.fetch(_REPLAY, user_id, after, upto)
    return [Event(row["position"], row["resource_id"], row["document"]) for row in rows]


async def prune(pool: asyncpg.Pool, retention_seconds: float) -> int:
    """Drop the changes older than the retention window, and the tombstones that pointed to
    them; returns how many changes. Skipped (0) while another process prunes."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _PRUNE_LOCK):
            return 0
        deleted: str = await conn.execute(
            "DELETE FROM update_changes WHERE changed_at < now() - make_interval(secs => $1)", retention_seconds
        )
        # A tombstone is written before its change is numbered: kept until its change is gone.
        await conn.execute(
            """
            DELETE FROM removed_updates r
            WHERE r.removed_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (
                  SELECT FROM update_changes c
                  WHERE c.staged_by = r.removed_by AND c.resource_id = r.resource_id AND c.chunk = r.change_chunk)
            """,
            retention_seconds,
        )
    return int(deleted.split()[-1])


async def prune_forever(pool: asyncpg.Pool, retention_seconds: float, interval: float = PRUNE_INTERVAL_SECONDS) -> None:
    """Prune every `interval` seconds, for as long as the task runs. Every API replica and every
    consumer runs it, so that pruning never waits for one of them."""
    while True:
        try:
            if pruned := await prune(pool, retention_seconds):
                log.info("pruned %d changes of the live update stream", pruned)
        except Exception as exc:  # the database out of reach, say: the next turn tries again
            log.warning("the changes of the live update stream were not pruned: %r", exc)
        await asyncio.sleep(interval)
