"""Imports as a batch writes them (core.imports.record_imports, one statement from column arrays): the
latest (importedAt, versionNumber, versionId, courseName) of each key wins, within a batch and across
batches, in any order, and the listing's table keeps each pair's latest import."""

from __future__ import annotations

from datetime import datetime

from tests.factories import apply, at, imported


async def rows(pool):
    found = await pool.fetch(
        "SELECT user_id, resource_id, course_id, course_name, version_number, imported_at FROM imports"
    )
    return {(r["user_id"], r["resource_id"], r["course_id"]): tuple(r)[3:] for r in found}


async def latest_imports(pool):
    found = await pool.fetch("SELECT user_id, resource_id, last_imported_at FROM imported_resources")
    return {(r["user_id"], r["resource_id"]): r["last_imported_at"] for r in found}


async def test_the_latest_import_of_a_key_wins_within_a_batch_and_across_batches(pool):
    await apply(
        pool,
        imported("u1", "r1", "c1", at(5), 2, courseName="Later"),
        imported("u1", "r1", "c1", at(1), 1, courseName="Earlier"),  # older, after it in the batch
        imported("u1", "r1", "c2", at(3), 1),
        imported("u2", "r1", "c1", at(2), 1, courseName="Tie"),
        imported("u2", "r1", "c1", at(2), 3, courseName="Tie"),  # same time: the higher version wins
    )
    await apply(pool, imported("u1", "r1", "c1", at(4), 5, courseName="Late arrival"))  # older than the row
    assert await rows(pool) == {
        ("u1", "r1", "c1"): ("Later", 2, at(5)),
        ("u1", "r1", "c2"): ("Course c2", 1, at(3)),
        ("u2", "r1", "c1"): ("Tie", 3, at(2)),
    }
    assert await latest_imports(pool) == {("u1", "r1"): at(5), ("u2", "r1"): at(2)}

    await apply(pool, imported("u2", "r1", "c9", at(8), 1))  # a newer import of the pair, in another course
    assert (await latest_imports(pool))[("u2", "r1")] == at(8)


async def test_a_batch_of_thousands_of_imports_is_one_statement_of_arrays(pool):
    events = [imported(f"u{n % 97}", f"r{n % 101}", f"c{n % 3}", at(n)) for n in range(5000)]
    await apply(pool, *events)
    keys = {(e.user_id, e.resource_id, e.course_id) for e in events}
    assert await pool.fetchval("SELECT count(*) FROM imports") == len(keys)
    last: dict[tuple[str, str], datetime] = {}
    for e in events:
        last[(e.user_id, e.resource_id)] = max(last.get((e.user_id, e.resource_id), e.imported_at), e.imported_at)
    assert await latest_imports(pool) == last
