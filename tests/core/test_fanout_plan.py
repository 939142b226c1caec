"""The refresh of available updates reads each importer once, whatever the table statistics say:
on tables never analyzed, on statistics taken before the imports arrived, and on fresh ones. Its
plans are shown by EXPLAIN ANALYZE, counting the import rows each one reads (and, for a new
version, the times it reads the resource and its versions)."""

import json
from typing import Any

import asyncpg
import pytest

from core import updates

IMPORTERS = 3000
RESOURCE = "r-popular"


async def add_importers(pool: asyncpg.Pool) -> None:
    """Version 2 of the resource; IMPORTERS users hold version 1 in one or two courses, and as many
    hold other resources."""
    await pool.execute(
        """
        INSERT INTO resources (id, title, description, type, account_id, account_name, create_date, update_date,
                               version_id, version_number, version_notes, published_at, event_id)
        SELECT 'r' || n, 'T', 'D', 'course', 'a', 'A', now(), now(), 'r' || n || '-v2', 2, 'notes', now(),
               gen_random_uuid()
        FROM generate_series(0, 50) AS n;
        UPDATE resources SET id = $$r-popular$$ WHERE id = 'r0';
        INSERT INTO resource_versions (resource_id, version_number, version_id, version_notes, published_at,
                                       update_date, event_id)
        SELECT id, v, id || '-v' || v, '', now(), now(), gen_random_uuid()
        FROM resources, generate_series(1, 2) AS v;
        """
    )
    await pool.execute(
        """
        INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
        SELECT 'u' || n, r.resource_id, 'c' || c, 'Course', r.resource_id || '-v1', 1, now()
        FROM generate_series(1, $1::int) AS n,
             LATERAL (VALUES ($2::text), ('r' || (1 + n % 50))) AS r(resource_id),
             LATERAL generate_series(1, 1 + n % 2) AS c
        """,
        IMPORTERS,
        RESOURCE,
    )


def import_rows_read(plan: dict[str, Any]) -> int:
    """Rows of `imports` the plan's nodes read: those they returned and those they filtered out,
    over all their loops."""
    read = 0
    if plan.get("Relation Name") == "imports":
        per_loop = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
        per_loop += plan.get("Rows Removed by Index Recheck", 0)
        read += per_loop * plan["Actual Loops"]
    for child in plan.get("Plans", []):
        read += import_rows_read(child)
    return read


def loops(plan: dict[str, Any], relation: str) -> int:
    """How many times the plan's nodes scanned `relation`."""
    own = plan["Actual Loops"] if plan.get("Relation Name") == relation else 0
    return own + sum(loops(child, relation) for child in plan.get("Plans", []))


async def explain_refresh(pool: asyncpg.Pool, resources: list[str], pairs: list[dict[str, str]]) -> dict[str, Any]:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            document = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {updates._REFRESH}", resources, pairs, [])
        finally:
            await transaction.rollback()
    plan: dict[str, Any] = json.loads(document)[0]["Plan"]
    return plan


@pytest.mark.parametrize("statistics", ["never analyzed", "taken before the imports", "fresh"])
async def test_a_new_version_reads_each_importer_once(fresh_pool, statistics):
    if statistics == "taken before the imports":
        await fresh_pool.execute("ANALYZE")
    await add_importers(fresh_pool)
    if statistics == "fresh":
        await fresh_pool.execute("VACUUM ANALYZE")
    importer_rows = IMPORTERS + IMPORTERS // 2  # one or two courses each

    plan = await explain_refresh(fresh_pool, [RESOURCE], [])

    # Linear: each import row of the resource read once to aggregate it (a quadratic plan, one
    # range of importers per importer, would read IMPORTERS times as many).
    assert import_rows_read(plan) <= 2 * importer_rows
    # The resource's row and the dates of its versions read once, not once per importer.
    assert loops(plan, "resources") == loops(plan, "resource_versions") == 1
    async with fresh_pool.acquire() as conn, conn.transaction():
        assert await updates.refresh(conn, resources=[RESOURCE]) == IMPORTERS


@pytest.mark.parametrize("statistics", ["never analyzed", "fresh"])
async def test_a_batch_of_imports_reads_only_its_pairs(fresh_pool, statistics):
    await add_importers(fresh_pool)
    if statistics == "fresh":
        await fresh_pool.execute("VACUUM ANALYZE")
    pairs = [{"user_id": f"u{n}", "resource_id": RESOURCE} for n in range(1, 501)]

    plan = await explain_refresh(fresh_pool, [], pairs)

    # Each pair's own import rows (one or two), never a scan of the table or of a resource's importers.
    assert import_rows_read(plan) <= 2 * len(pairs)
