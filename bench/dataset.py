"""The read path's data set, written straight into the tables of the first migration (which every
version of the service shares), so that the baseline and this tree read the very same rows.

`users` teachers each import `updates_per_user` resources (of `users` resources, each imported by
as many teachers) into one or two courses, holding version 1; every resource is at version 2, so
each import is an available update (some second courses ignored version 2 already). Every user
has favorites, and a session, listed with its id in the sessions file (`user-id session-id`
lines) that the load generator picks from.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import hashlib
from pathlib import Path

import asyncpg

# Rows derived from generate_series: numbers decide everything, so two builds are identical.
_RESOURCES = """
INSERT INTO resources (id, title, description, type, account_id, account_name, authors, tags, thumbnail,
                       create_date, update_date, version_id, version_number, event_id)
SELECT 'r' || n, 'Resource ' || n || ': fractions, decimals and percentages',
       'Practice sets and a short quiz for the unit on fractions. ' || repeat('Lorem ipsum dolor sit amet. ', 4),
       'course', 'acct-' || (n % 7), 'District ' || (n % 7),
       jsonb_build_array(jsonb_build_object('id', 'author-' || (n % 97), 'name', 'Author ' || (n % 97),
                                            'avatarUrl', 'https://cdn.example.edu/a/' || (n % 97) || '.png')),
       ARRAY['math', 'grade-' || (n % 12), 'fractions'],
       jsonb_build_object('url', 'https://cdn.example.edu/t/' || n || '.png', 'description', 'Cover'),
       timestamptz '2025-01-01' + n * interval '1 minute',
       timestamptz '2026-01-01' + (n * 7919 % 1000003) * interval '1 second',
       'r' || n || '-v2', 2, md5('r' || n)::uuid
FROM generate_series(1, $1::int) AS n
"""

_VERSIONS = """
INSERT INTO resource_versions (resource_id, version_number, version_id, version_notes, published_at, update_date,
                               event_id)
SELECT 'r' || n, v, 'r' || n || '-v' || v, 'Version ' || v || ': corrected answers and a new exercise.',
       CASE v WHEN 1 THEN timestamptz '2025-06-01' + n * interval '1 minute'
              ELSE timestamptz '2026-01-01' + (n * 7919 % 1000003) * interval '1 second' END,
       CASE v WHEN 1 THEN timestamptz '2025-06-01' + n * interval '1 minute'
              ELSE timestamptz '2026-01-01' + (n * 7919 % 1000003) * interval '1 second' END,
       md5('r' || n || 'v' || v)::uuid
FROM generate_series(1, $1::int) AS n, generate_series(1, 2) AS v
"""

# User u imports resources (u + k * stride) mod R for k < per_user, into course c-u-(k % 5), and a
# second course for one import in five, which ignored version 2 in half of them: every import is
# an available update, with one or two pending courses.
_IMPORTS = """
INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at,
                     ignored_version_number)
SELECT 'u' || u, 'r' || (1 + (u + k * $3::int) % $1::int), 'c-' || u || '-' || c, 'Course ' || c || ' of teacher ' || u,
       'r' || (1 + (u + k * $3::int) % $1::int) || '-v1', 1,
       timestamptz '2025-09-01' + ((u * 31 + k * 17 + c) % 100000) * interval '1 minute',
       CASE WHEN c >= 5 AND (u + k) % 2 = 0 THEN 2 END
FROM generate_series(1, $1::int) AS u, generate_series(0, $2::int - 1) AS k,
     LATERAL (SELECT k % 5 AS c UNION ALL SELECT 5 + k % 5 WHERE (u + k) % 5 = 0) AS courses
ORDER BY 7  -- in the order they happened, as the consumer writes them
"""

_USERS = """
INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)
SELECT 'u' || n, 'acct-' || (n % 7), 'District ' || (n % 7), 'Teacher ' || n, 't' || n || '@example.edu',
       timestamptz '2025-01-01', md5('u' || n)::uuid
FROM generate_series(1, $1::int) AS n
"""

# The rule of README "Updates and ignores", written out, since the first migration has no function for it.
_AVAILABLE_UPDATES = """
INSERT INTO available_updates (user_id, resource_id, version_number, published_at)
SELECT DISTINCT i.user_id, i.resource_id, r.version_number, v.published_at
FROM imports i
JOIN resources r ON r.id = i.resource_id
JOIN resource_versions v ON v.resource_id = r.id AND v.version_number = r.version_number
WHERE i.version_number < r.version_number AND coalesce(i.ignored_version_number, 0) < r.version_number
ORDER BY i.resource_id  -- resource by resource, as versions fan out
"""


def session_id(user: int) -> str:
    """The session id of user `u<user>`: predictable, so that pgbench can present it too
    (SESSION_HASH_SQL)."""
    return f"bench-session-{user}"


# The id hash of the session of user `u:n`, in a pgbench script.
SESSION_HASH_SQL = "sha256(convert_to('bench-session-' || :n, 'UTF8'))"

# Each user marks resources as favorites, most recently the last.
_FAVORITES = """
INSERT INTO favorites (user_id, resource_id, created_at)
SELECT 'u' || u, 'r' || (1 + (u * 13 + k * 101) % $1::int),
       timestamptz '2025-10-01' + (u + k * 7919) * interval '1 second'
FROM generate_series(1, $1::int) AS u, generate_series(1, $2::int) AS k
ON CONFLICT DO NOTHING
"""


async def build(
    database: str, users: int, updates_per_user: int, favorites_per_user: int, sessions_file: Path
) -> dict[str, int]:
    """Fill an empty, migrated database; returns the row counts."""
    stride = max(1, users // updates_per_user)
    expires = datetime.now(UTC) + timedelta(days=30)
    connection = await asyncpg.connect(database)
    try:
        async with connection.transaction():
            await connection.execute(_USERS, users)
            await connection.execute(_RESOURCES, users)
            await connection.execute(_VERSIONS, users)
            await connection.execute(_IMPORTS, users, updates_per_user, stride)
            await connection.execute(_AVAILABLE_UPDATES)
            await connection.execute(_FAVORITES, users, favorites_per_user)
            session_ids = [session_id(n) for n in range(1, users + 1)]
            await connection.copy_records_to_table(
                "sessions",
                records=[
                    (hashlib.sha256(sid.encode()).digest(), f"u{n}", expires)
                    for n, sid in enumerate(session_ids, start=1)
                ],
                columns=["id_hash", "user_id", "expires_at"],
            )
        await connection.execute("VACUUM ANALYZE")
        counts = {
            table: await connection.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("users", "resources", "imports", "available_updates", "favorites", "sessions")
        }
    finally:
        await connection.close()
    sessions_file.write_text("".join(f"u{n} {sid}\n" for n, sid in enumerate(session_ids, start=1)))
    return counts
