"""The fan-out's own computation (updates.FAN_OUT) gives the rows of the definition
(updates.COMPUTE, which the drift audit compares the table with) byte for byte: the courses in
their order (ties of import time broken by course id), each with the date of the version it holds
or null when that version never arrived, text that JSON must escape, times with and without a
fraction of a second, ignored versions, a resource gone and one nobody imported."""

from typing import Any

import asyncpg

from core import updates

RESOURCES = ["r-gone", "r-lonely", "r1", "r2"]


async def add_rows(pool: asyncpg.Pool) -> None:
    """r1 at version 3 (version 2 never arrived), r2 at version 1, r-gone deleted (imported, no
    row), r-lonely imported by nobody; 300 teachers with one to four courses each."""
    await pool.execute(
        """
        INSERT INTO resources (id, title, description, type, account_id, account_name, create_date, update_date,
                               version_id, version_number, version_notes, published_at, event_id)
        SELECT id, 'T', 'D', 'course', 'a', 'A', now(), now(), id || '-v' || v, v, 'notes',
               timestamptz '2026-02-01 10:00:00.25', gen_random_uuid()
        FROM (VALUES ('r1', 3), ('r2', 1), ('r-lonely', 2)) AS r(id, v);
        INSERT INTO resource_versions (resource_id, version_number, version_id, version_notes, published_at,
                                       update_date, event_id)
        SELECT id, v, id || '-v' || v, '', timestamptz '2026-01-01' + v * interval '1 day 0.5 second', now(),
               gen_random_uuid()
        FROM (VALUES ('r1', 1), ('r1', 3), ('r2', 1), ('r-lonely', 1), ('r-lonely', 2)) AS r(id, v);
        INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at,
                             ignored_version_number)
        SELECT 'u' || n, r, 'c' || c, E'Course "' || c || E'" \\\\ \\n é ' || n, r || '-v' || held, held,
               timestamptz '2025-09-01' + ((n * c) % 3) * interval '1 hour' + (c % 2) * interval '0.125 second',
               CASE WHEN (n + c) % 7 = 0 THEN 3 WHEN (n + c) % 11 = 0 THEN 2 END
        FROM generate_series(1, 300) AS n, generate_series(1, 1 + n % 4) AS c,
             LATERAL (VALUES ('r1', 1 + (n + c) % 3), ('r2', 1), ('r-gone', 1)) AS i(r, held)
        """
    )


def rows(records: list[asyncpg.Record]) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(r["user_id"], r["resource_id"]): tuple(r) for r in records}


async def test_the_fan_out_computes_the_definition_byte_for_byte(fresh_pool):
    await add_rows(fresh_pool)
    fast = await fresh_pool.fetch(
        f"SELECT user_id, resource_id, version_number, published_at, courses::text FROM ({updates.FAN_OUT}) c",
        RESOURCES,
    )
    scope = "i.resource_id = scope.resource_id"
    definition = await fresh_pool.fetch(
        "SELECT c.user_id, c.resource_id, version_number, published_at, courses::text FROM unnest($1::text[]) "
        f"AS scope(resource_id) CROSS JOIN LATERAL ({updates.COMPUTE.format(scope=scope)}) c",
        RESOURCES,
    )

    assert rows(fast) == rows(definition)
    assert len(fast) == 900  # r-lonely has no importer
    courses = [r["courses"] for r in fast]
    assert sum(c is None for c in courses) > 300  # r-gone's, r2's (at the latest) and the ignored
    assert any(c and '"versionCreateDate" : null' in c for c in courses)  # r1's version 2
    assert max(c.count("courseId") for c in courses if c) >= 3
