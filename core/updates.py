"""Available updates, the aggregate the consumer keeps and the API reads and ignores.

The rule (README: "Updates and ignores") is the SQL function `course_is_pending`; the table
`available_updates` holds exactly the (user, resource) pairs with a pending course. Every writer
of a resource's updates, the consumer's batch and the ignore endpoint, first takes that
resource's row lock (`lock_resources`), so that neither loses the other's effect.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import asyncpg

from core.db import Connection
from core.errors import FieldError, InvalidInput, NotFound


async def lock_resources(conn: Connection, resource_ids: Iterable[str]) -> dict[str, int]:
    """Lock the rows of these resources until the transaction ends, in id order (no deadlocks),
    and return their latest version numbers."""
    ids = sorted(set(resource_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT id, version_number FROM resources WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE", ids
    )
    return {row["id"]: row["version_number"] for row in rows}


# Recompute the rule for the pairs in scope: every importer of the resources in $1, every pair
# already in the table for them, and the (user, resource) pairs in $2. Insert or refresh the pairs
# with a pending course, delete the others. One statement, whatever the number of pairs.
_REFRESH = """
WITH scope AS (
    SELECT user_id, resource_id FROM imports WHERE resource_id = ANY($1::text[])
    UNION
    SELECT user_id, resource_id FROM available_updates WHERE resource_id = ANY($1::text[])
    UNION
    SELECT user_id, resource_id FROM jsonb_to_recordset($2::jsonb) AS pair(user_id text, resource_id text)
),
wanted AS (
    SELECT DISTINCT ON (s.user_id, s.resource_id) s.user_id, s.resource_id, r.version_number, v.published_at
    FROM scope s
    JOIN resources r ON r.id = s.resource_id
    JOIN resource_versions v ON v.resource_id = r.id AND v.version_number = r.version_number
    JOIN imports i ON i.user_id = s.user_id AND i.resource_id = s.resource_id
    WHERE course_is_pending(i.version_number, i.ignored_version_number, r.version_number)
),
removed AS (
    DELETE FROM available_updates a
    USING scope s
    WHERE a.user_id = s.user_id AND a.resource_id = s.resource_id
      AND NOT EXISTS (SELECT FROM wanted w WHERE w.user_id = a.user_id AND w.resource_id = a.resource_id)
    RETURNING 1
),
upserted AS (
    INSERT INTO available_updates (user_id, resource_id, version_number, published_at)
    SELECT user_id, resource_id, version_number, published_at FROM wanted
    ON CONFLICT (user_id, resource_id) DO UPDATE SET
        version_number = EXCLUDED.version_number, published_at = EXCLUDED.published_at
    WHERE (available_updates.version_number, available_updates.published_at)
          IS DISTINCT FROM (EXCLUDED.version_number, EXCLUDED.published_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM upserted)
"""


async def refresh(conn: Connection, *, resources: Iterable[str] = (), pairs: Iterable[tuple[str, str]] = ()) -> int:
    """Bring the table in line with the rule for every importer of `resources` (the fan-out of a
    new version or a deletion) and for the (user, resource) `pairs`. Returns the rows changed."""
    scope_pairs = [{"user_id": user_id, "resource_id": resource_id} for user_id, resource_id in pairs]
    changed: int = await conn.fetchval(_REFRESH, sorted(set(resources)), scope_pairs)
    return changed


async def available_updates(
    pool: asyncpg.Pool, user_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    """A user's available updates, newest version first, after the keyset position `after`."""
    return await pool.fetch(
        """
        SELECT * FROM available_update_details
        WHERE user_id = $1
          AND (published_at, resource_id) < (coalesce($2::timestamptz, 'infinity'), coalesce($3::text, ''))
        ORDER BY published_at DESC, resource_id DESC
        LIMIT $4
        """,
        user_id,
        *(after or (None, None)),
        limit,
    )


async def available_update(pool: asyncpg.Pool, user_id: str, resource_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT * FROM available_update_details WHERE user_id = $1 AND resource_id = $2", user_id, resource_id
    )


async def pending_courses(conn: Connection, user_id: str, resource_id: str, latest: int) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT course_id FROM imports
        WHERE user_id = $1 AND resource_id = $2 AND course_is_pending(version_number, ignored_version_number, $3)
        """,
        user_id,
        resource_id,
        latest,
    )
    return [row["course_id"] for row in rows]


def no_update(resource_id: str) -> NotFound:
    return NotFound(f"You have no available update for resource {resource_id!r}.")


async def ignore_update(pool: asyncpg.Pool, user_id: str, resource_id: str, course_ids: list[str] | None) -> None:
    """Ignore the resource's current update for `course_ids` (None or empty: all pending courses).

    NotFound when there is no update; InvalidInput, changing nothing, when a course is not pending.
    """
    async with pool.acquire() as conn, conn.transaction():
        # Whichever of this and a consumer's batch for the resource comes second sees the other's effect.
        latest = (await lock_resources(conn, [resource_id])).get(resource_id)
        pending = await pending_courses(conn, user_id, resource_id, latest) if latest else []
        if not pending:
            raise no_update(resource_id)
        if course_ids and (unknown := sorted(set(course_ids) - set(pending))):
            message = f"not pending for this update: {', '.join(unknown)}"
            raise InvalidInput(
                f"Some courses are {message}.", [FieldError(field="courseIds", location="body", message=message)]
            )
        await conn.execute(
            """
            UPDATE imports SET ignored_version_number = $4
            WHERE user_id = $1 AND resource_id = $2 AND course_id = ANY($3::text[])
            """,
            user_id,
            resource_id,
            course_ids or pending,
            latest,
        )
        await refresh(conn, pairs=[(user_id, resource_id)])
