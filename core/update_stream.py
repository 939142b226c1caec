"""The changes of available updates, as the live update stream reads them (README: "Live updates").

Every writer of `available_updates` goes through `updates.refresh`, whose statement stages, per
resource, the users whose update it changed. When the transaction commits, PostgreSQL numbers
those rows in commit order and notifies `CHANGES_CHANNEL` (sql/migrations/
20261128180000_update_stream.sql): a reader that has read up to position N has read every change
committed up to N, and can go on from N at any time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.db import Connection, Queryable
from core.updates import UPDATE_DOCUMENT

CHANGES_CHANNEL = "commons_users_update_changes"
# The lock under which the trigger numbers a transaction's changes until it commits.
_COMMIT_ORDER_LOCK = 7256120301


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


async def current_position(conn: Connection) -> int:
    """The position of the last committed change (0 before the first). Read under the trigger's
    lock, so that no change numbered at or before it is still committing."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _COMMIT_ORDER_LOCK)
        position: int = await conn.fetchval(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM update_changes_position_seq"
        )
    return position


async def changes_after(conn: Connection, position: int, limit: int) -> list[Change]:
    """The first `limit` changes committed after `position`, in order."""
    rows = await conn.fetch(
        "SELECT position, resource_id, user_ids FROM update_changes WHERE position > $1 ORDER BY position LIMIT $2",
        position,
        limit,
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


async def replay(conn: Queryable, user_id: str, after: int, upto: int) -> list[Event] | None:
    """The user's changes in (`after`, `upto`], one event per resource at its last change, as the
    updates stand now; None when some of them were pruned (or `after` is not a position yet), so
    that the client reloads its list instead."""
    if after > upto:
        return None
    if after < upto:
        oldest = await conn.fetchval("SELECT min(position) FROM update_changes")
        if oldest is None or oldest > after + 1:
            return None
    rows = await conn.fetch(
        f"""
        SELECT latest.position, latest.resource_id, ({UPDATE_DOCUMENT}) AS document
        FROM (
            SELECT DISTINCT ON (resource_id) position, resource_id FROM update_changes
            WHERE position > $2 AND position <= $3 AND $1 = ANY (user_ids)
            ORDER BY resource_id, position DESC
        ) latest
        LEFT JOIN available_updates a ON a.user_id = $1 AND a.resource_id = latest.resource_id
        ORDER BY latest.position
        """,
        user_id,
        after,
        upto,
    )
    return [Event(row["position"], row["resource_id"], row["document"]) for row in rows]


async def prune(conn: Queryable, retention_seconds: float) -> int:
    """Drop the changes older than the retention window; returns how many."""
    deleted: str = await conn.execute(
        "DELETE FROM update_changes WHERE changed_at < now() - make_interval(secs => $1)", retention_seconds
    )
    return int(deleted.split()[-1])
