"""Imports: which version of a resource each user holds in each Canvas course, the latest
(importedAt, versionNumber, versionId, courseName) winning, and the listing of imported resources."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from core.db import Connection
from core.events import ResourceImported


async def record_imports(conn: Connection, imported: Sequence[ResourceImported]) -> None:
    await conn.execute(
        """
        INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
        SELECT DISTINCT ON (user_id, resource_id, course_id)
               user_id, resource_id, course_id, course_name, version_id, version_number, imported_at
        FROM jsonb_to_recordset($1::jsonb) AS e(
            user_id text, resource_id text, course_id text, course_name text, version_id text,
            version_number integer, imported_at timestamptz)
        ORDER BY user_id, resource_id, course_id, imported_at DESC, version_number DESC, version_id DESC,
                 course_name DESC
        ON CONFLICT (user_id, resource_id, course_id) DO UPDATE SET
            course_name = EXCLUDED.course_name, version_id = EXCLUDED.version_id,
            version_number = EXCLUDED.version_number, imported_at = EXCLUDED.imported_at
        WHERE (imports.imported_at, imports.version_number, imports.version_id, imports.course_name)
            < (EXCLUDED.imported_at, EXCLUDED.version_number, EXCLUDED.version_id, EXCLUDED.course_name)
        """,
        [event.model_dump() for event in imported],
    )


async def imported_resources(
    pool: asyncpg.Pool, user_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    """The resources a user imported, by their latest import, newest first, after the keyset
    position `after`. Deleted resources drop out."""
    return await pool.fetch(
        """
        SELECT r.*, i.last_imported_at AS sort_key
        FROM (
            SELECT resource_id, max(imported_at) AS last_imported_at
            FROM imports
            WHERE user_id = $1
            GROUP BY resource_id
        ) i
        JOIN resources r ON r.id = i.resource_id
        WHERE (i.last_imported_at, r.id) < (coalesce($2::timestamptz, 'infinity'), coalesce($3::text, ''))
        ORDER BY i.last_imported_at DESC, r.id DESC
        LIMIT $4
        """,
        user_id,
        *(after or (None, None)),
        limit,
    )
