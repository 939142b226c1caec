"""Favorites: the resources a user marked, most recent first."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from core.db import Connection, Queryable


async def favorite_resources(
    conn: Queryable, user_id: str, after: tuple[datetime, str] | None, limit: int | None
) -> list[asyncpg.Record]:
    """A user's favorite resources, most recently marked first, after the keyset position `after`
    (`limit` None: all of them)."""
    return await conn.fetch(
        """
        SELECT r.*, f.created_at AS sort_key
        FROM favorites f
        JOIN resources r ON r.id = f.resource_id
        WHERE f.user_id = $1
          AND (f.created_at, f.resource_id) < (coalesce($2::timestamptz, 'infinity'), coalesce($3::text, ''))
        ORDER BY f.created_at DESC, f.resource_id DESC
        LIMIT $4
        """,
        user_id,
        *(after or (None, None)),
        limit,
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
