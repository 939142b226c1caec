"""Favorites: the resources a user marked, most recent first."""

from __future__ import annotations

import asyncpg

from core.db import Connection, Queryable
from core.sessions import for_session

# The session user's favorite resources (core.sessions.for_session), most recently marked first,
# after the keyset position ($2, $3): $4 rows of (sort_key, id, document), the document being the
# resource's JSON text, but for the last row, which only tells whether there is a next page.
PAGE_SQL = for_session(
    """
    SELECT f.created_at AS sort_key, f.resource_id AS id, f.n,
           CASE WHEN f.n < $4 THEN (SELECT r.document::text FROM resources r WHERE r.id = f.resource_id) END
               AS document
    FROM (
        SELECT created_at, resource_id,
               row_number() OVER (ORDER BY created_at DESC, resource_id DESC ROWS UNBOUNDED PRECEDING) AS n
        FROM favorites
        WHERE user_id = session.user_id
          AND (created_at, resource_id) < (coalesce($2::timestamptz, 'infinity'), coalesce($3::text, ''))
        ORDER BY created_at DESC, resource_id DESC
        LIMIT $4
    ) f
    """,
    order_by="rows.n",
)


async def all_favorites(conn: Queryable, user_id: str) -> list[asyncpg.Record]:
    """All of a user's favorite resources, most recently marked first: rows of (id, document)."""
    return await conn.fetch(
        """
        SELECT r.id, r.document::text AS document
        FROM favorites f JOIN resources r ON r.id = f.resource_id
        WHERE f.user_id = $1
        ORDER BY f.created_at DESC, f.resource_id DESC
        """,
        user_id,
    )


async def add_favorite(conn: Connection, user_id: str, resource_id: str) -> bool:
    """Mark a favorite (a no-op when it is one already). False when the resource does not exist."""
    exists = await conn.fetchval(
        """
        WITH resource AS (SELECT id FROM resources WHERE id = $2 FOR KEY SHARE),
        added AS (
            INSERT INTO favorites (user_id, resource_id)
            SELECT $1, id FROM resource
            ON CONFLICT (user_id, resource_id) DO NOTHING
        )
        SELECT EXISTS (SELECT FROM resource)
        """,
        user_id,
        resource_id,
    )
    return bool(exists)


async def remove_favorite(pool: asyncpg.Pool, user_id: str, resource_id: str) -> None:
    await pool.execute("DELETE FROM favorites WHERE user_id = $1 AND resource_id = $2", user_id, resource_id)
