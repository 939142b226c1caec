"""Available updates, the aggregate the consumer keeps and the API reads and ignores.

The rule (README: "Updates and ignores") is the SQL function `course_is_pending`; the table
`available_updates` holds exactly the (user, resource) pairs with a pending course. Every writer
of a resource's updates, the consumer's batch and the ignore endpoint, first takes that
resource's row lock (`lock_resources`), so that neither loses the other's effect.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from core.db import Connection
from core.errors import FieldError, InvalidInput, NotFound
from core.sessions import for_session


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


# The rule computed over the import rows `i` that the condition {scope} selects: one row per
# (user, resource) pair, with the resource's latest version and the pending courses as the API
# shows them (most recently imported first, each with the date of the version it holds); the
# courses are NULL when none is pending, or when the resource is gone. The definition: the drift
# audit compares the table with it (core/audit.py), and the refresh computes a pair with it.
COMPUTE = """
SELECT i.user_id, i.resource_id, r.version_number, r.published_at,
       json_agg(json_build_object(
                    'courseId', i.course_id, 'courseName', i.course_name, 'importDate', api_time(i.imported_at),
                    'versionCreateDate', api_time(held.published_at))
                ORDER BY i.imported_at DESC, i.course_id)
           FILTER (WHERE course_is_pending(i.version_number, i.ignored_version_number, r.version_number)) AS courses
FROM imports i
LEFT JOIN resources r ON r.id = i.resource_id
LEFT JOIN resource_versions held ON held.resource_id = i.resource_id AND held.version_number = i.version_number
WHERE {scope}
GROUP BY i.user_id, i.resource_id, r.version_number, r.published_at
"""

# The same rows as COMPUTE for every importer of the resource `scope.resource_id`, byte for byte,
# at a fraction of its cost (bench/README.md: the fan-out's profile): the resource's row and the
# dates of its versions are read once (one lateral lookup, one aggregate), not once per import
# row; each course is rendered by json_object, which takes its text as it is, where
# json_build_object looks up the type of every argument at every call; and the import rows are
# sorted once, by user and then in the courses' order, and aggregated in that order, where an
# aggregate's own ORDER BY sorts each user's rows apart. That order holds: a subquery with ORDER
# BY is never merged into the query above it, and its sorted rows are the aggregate's input as
# they come (json_agg has no partial form that parallel workers could split).
FAN_OUT = """
SELECT c.user_id, scope.resource_id, r.version_number, r.published_at, c.courses
FROM unnest($1::text[]) AS scope(resource_id)
LEFT JOIN LATERAL (
    SELECT version_number, published_at FROM resources WHERE id = scope.resource_id OFFSET 0
) r ON true
CROSS JOIN LATERAL (
    SELECT jsonb_object_agg(version_number, api_time(published_at)) AS dates
    FROM resource_versions WHERE resource_id = scope.resource_id
) versions
CROSS JOIN LATERAL (
    SELECT i.user_id,
           json_agg(json_object(
                        ARRAY['courseId', 'courseName', 'importDate', 'versionCreateDate'],
                        ARRAY[i.course_id, i.course_name, api_time(i.imported_at),
                              versions.dates ->> i.version_number::text]))
               FILTER (WHERE course_is_pending(i.version_number, i.ignored_version_number, r.version_number)) AS courses
    FROM (
        SELECT user_id, course_id, course_name, imported_at, version_number, ignored_version_number
        FROM imports WHERE resource_id = scope.resource_id
        ORDER BY user_id, imported_at DESC, course_id
    ) i
    GROUP BY i.user_id
) c
"""

# Users a change of the live update stream names at most: a larger change is staged in chunks,
# so that an API replica reads a bounded number of users at a time (README: "Live updates").
CHANGE_CHUNK_USERS = 10_000

# Recompute the rule for every importer of the resources in $1 and for the (user, resource) pairs
# in $2, then write what changed: upsert the pairs with a pending course, delete the others; and
# stage, per resource and chunk of users, the users whose update changed, for the live update
# stream (numbered when the transaction commits: sql/migrations/20261128180000_update_stream.sql).
# Each update written remembers the change that names its user (this transaction, and the chunk),
# and so does the tombstone of each update removed: a reconnection's replay reads the user's own
# rows, never the changes (core/update_stream.py). The updates of the resources in $3 (a version
# published again under the same number) are written and staged even if their rows are the same,
# since their documents changed.
#
# Every step is a nested loop over the scope by construction: a lateral subquery that aggregates
# (or that has an OFFSET) cannot be flattened into a join, so whatever the statistics say, each
# resource's importers are read once, in one range of imports_resource_idx (FAN_OUT), and each
# pair's imports in one range of the primary key (COMPUTE); a row to delete is found by its key
# and deleted by its ctid, a row to write by its key (ON CONFLICT), and one that would not change
# is not written. A pair whose resource is in $1 is left to the first branch, so that no pair is
# computed twice and the upsert needs no sort to take one row per key; a pair without imports is
# computed as one with no pending course, so that an update left without imports is removed (the
# drift audit's repair). Chunks are counted as the rows come, and the removed rows in chunks of
# their own (negative), so that no step joins rows by a guess of how many there are. The cost is
# linear in the pairs (README: "Data model").
_REFRESH = f"""
WITH computed AS MATERIALIZED (
    SELECT c.*, (row_number() OVER () - 1) / {CHANGE_CHUNK_USERS} AS chunk
    FROM (
        {FAN_OUT}
        UNION ALL
        SELECT scope.user_id, scope.resource_id, c.version_number, c.published_at, c.courses
        FROM jsonb_to_recordset($2::jsonb) AS scope(user_id text, resource_id text)
        LEFT JOIN LATERAL ({COMPUTE.format(scope="i.user_id = scope.user_id AND i.resource_id = scope.resource_id")}) c
            ON true
        WHERE scope.resource_id <> ALL ($1::text[])
    ) c
),
removed AS (
    DELETE FROM available_updates
    WHERE ctid = ANY (ARRAY(
        SELECT existing.ctid FROM computed c
        CROSS JOIN LATERAL (
            SELECT a.ctid FROM available_updates a WHERE a.user_id = c.user_id AND a.resource_id = c.resource_id
            LIMIT 1
        ) existing
        WHERE c.courses IS NULL))
    RETURNING user_id, resource_id
),
removed_in_chunks AS (
    SELECT user_id, resource_id, -1 - (row_number() OVER () - 1) / {CHANGE_CHUNK_USERS} AS chunk FROM removed
),
tombstones AS (
    INSERT INTO removed_updates (user_id, resource_id, removed_by, change_chunk)
    SELECT user_id, resource_id, pg_current_xact_id(), chunk FROM removed_in_chunks
    ON CONFLICT (user_id, resource_id) DO UPDATE SET
        removed_by = EXCLUDED.removed_by, change_chunk = EXCLUDED.change_chunk, removed_at = EXCLUDED.removed_at
),
upserted AS (
    INSERT INTO available_updates
        (user_id, resource_id, version_number, published_at, courses, changed_by, change_chunk)
    SELECT user_id, resource_id, version_number, published_at, courses, pg_current_xact_id(), chunk
    FROM computed WHERE courses IS NOT NULL
    ON CONFLICT (user_id, resource_id) DO UPDATE SET
        version_number = EXCLUDED.version_number, published_at = EXCLUDED.published_at, courses = EXCLUDED.courses,
        changed_by = EXCLUDED.changed_by, change_chunk = EXCLUDED.change_chunk
    WHERE (available_updates.version_number, available_updates.published_at, available_updates.courses::text)
          IS DISTINCT FROM (EXCLUDED.version_number, EXCLUDED.published_at, EXCLUDED.courses::text)
       OR available_updates.resource_id = ANY ($3::text[])
    RETURNING user_id, resource_id, change_chunk AS chunk
),
changed AS (TABLE removed_in_chunks UNION ALL TABLE upserted),
staged AS (
    INSERT INTO update_changes (resource_id, chunk, user_ids, user_count)
    SELECT resource_id, chunk, array_agg(user_id), count(*) FROM changed GROUP BY resource_id, chunk
    -- The same transaction refreshed the resource before (the consumer's event-by-event path).
    ON CONFLICT (staged_by, resource_id, chunk) DO UPDATE SET
        user_ids = ARRAY(SELECT DISTINCT unnest(update_changes.user_ids || EXCLUDED.user_ids)),
        user_count = (SELECT count(DISTINCT u) FROM unnest(update_changes.user_ids || EXCLUDED.user_ids) u)
)
SELECT count(*) FROM changed
"""


async def refresh(
    conn: Connection,
    *,
    resources: Iterable[str] = (),
    pairs: Iterable[tuple[str, str]] = (),
    republished: Iterable[str] = (),
) -> int:
    """Bring the table in line with the rule for every importer of `resources` (the fan-out of a
    new version or a deletion) and for the (user, resource) `pairs`; the updates of `republished`
    resources (among `resources`) count as changed. Returns the rows changed."""
    scope_pairs = [{"user_id": user_id, "resource_id": resource_id} for user_id, resource_id in sorted(set(pairs))]
    changed: int = await conn.fetchval(_REFRESH, sorted(set(resources)), scope_pairs, sorted(set(republished)))
    return changed


# An available update `a` as the API shows it (README: "Endpoints"), from the read model: the
# document of its resource's latest version, with the pending courses kept with the update.
UPDATE_DOCUMENT = "SELECT with_courses(r.update_head, a.courses) FROM resources r WHERE r.id = a.resource_id"

# A page of the session user's updates (core.sessions.for_session), newest version first, after
# the keyset position ($2, $3): $4 rows, of which the last only tells whether there is a next
# page, so its document is not read.
PAGE_SQL = for_session(
    f"""
    SELECT a.published_at, a.resource_id, a.n, CASE WHEN a.n < $4 THEN ({UPDATE_DOCUMENT}) END AS document
    FROM (
        SELECT resource_id, published_at, courses,
               row_number() OVER (ORDER BY published_at DESC, resource_id DESC ROWS UNBOUNDED PRECEDING) AS n
        FROM available_updates
        WHERE user_id = session.user_id
          AND (published_at, resource_id) < (coalesce($2::timestamptz, 'infinity'), coalesce($3::text, ''))
        ORDER BY published_at DESC, resource_id DESC
        LIMIT $4
    ) a
    """,
    order_by="rows.n",
)

# The session user's update for the resource $2, if there is one.
ONE_SQL = for_session(
    f"SELECT ({UPDATE_DOCUMENT}) AS document FROM available_updates a "
    "WHERE a.user_id = session.user_id AND a.resource_id = $2"
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
