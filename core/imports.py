"""Imports: which version of a resource each user holds in each Canvas course, the latest
(importedAt, versionNumber, versionId, courseName) winning, and the listing of imported resources."""

from __future__ import annotations

from collections.abc import Sequence

from core.db import Connection
from core.events import ResourceImported
from core.sessions import for_session

# The batch's imports arrive as one array per column (asyncpg encodes them in its compiled code, and
# PostgreSQL reads them without parsing text), in one statement that upserts both tables. Within
# the batch, each key keeps its latest import before meeting the table's row.
_RECORD_IMPORTS = """
WITH incoming AS MATERIALIZED (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::timestamptz[])
        AS e(user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
),
latest AS (
    INSERT INTO imported_resources (user_id, resource_id, last_imported_at)
    SELECT user_id, resource_id, max(imported_at) FROM incoming GROUP BY user_id, resource_id
    ON CONFLICT (user_id, resource_id) DO UPDATE SET last_imported_at = EXCLUDED.last_imported_at
    WHERE imported_resources.last_imported_at < EXCLUDED.last_imported_at
)
INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
SELECT DISTINCT ON (user_id, resource_id, course_id)
       user_id, resource_id, course_id, course_name, version_id, version_number, imported_at
FROM incoming
ORDER BY user_id, resource_id, course_id, imported_at DESC, version_number DESC, version_id DESC, course_name DESC
ON CONFLICT (user_id, resource_id, course_id) DO UPDATE SET
    course_name = EXCLUDED.course_name, version_id = EXCLUDED.version_id,
    version_number = EXCLUDED.version_number, imported_at = EXCLUDED.imported_at
WHERE (imports.imported_at, imports.version_number, imports.version_id, imports.course_name)
    < (EXCLUDED.imported_at, EXCLUDED.version_number, EXCLUDED.version_id, EXCLUDED.course_name)
"""


async def record_imports(conn: Connection, imported: Sequence[ResourceImported]) -> None:
    """Record the imports, and each imported resource's latest import for the listing."""
    await conn.execute(
        _RECORD_IMPORTS,
        [e.user_id for e in imported],
        [e.resource_id for e in imported],
        [e.course_id for e in imported],
        [e.course_name for e in imported],
        [e.version_id for e in imported],
        [e.version_number for e in imported],
        [e.imported_at for e in imported],
    )


# A page of the resources the session user imported (core.sessions.for_session), by their latest
# import, newest first, after the keyset position ($2, $3): rows of (sort_key, id, document), the
# document being the resource's JSON text. Deleted resources drop out.
PAGE_SQL = for_session(
    """
    SELECT i.last_imported_at AS sort_key, r.id, r.document::text AS document,
           row_number() OVER (ORDER BY i.last_imported_at DESC, i.resource_id DESC ROWS UNBOUNDED PRECEDING) AS n
    FROM imported_resources i
    JOIN resources r ON r.id = i.resource_id
    WHERE i.user_id = session.user_id
      AND (i.last_imported_at, i.resource_id) < (coalesce($2::timestamptz, 'infinity'), coalesce($3::text, ''))
    ORDER BY i.last_imported_at DESC, i.resource_id DESC
    LIMIT $4
    """,
    order_by="rows.n",
)
