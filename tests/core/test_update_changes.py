"""The changes behind the live update stream (core/update_stream.py): staged by the writers' own
statement, numbered in commit order as the transaction commits, announced then, and never for a
write that was rolled back."""

from __future__ import annotations

import asyncio

import asyncpg

from core import ingest, update_stream, updates
from tests.factories import apply, at, imported, published


async def changes(pool: asyncpg.Pool) -> list[tuple[int | None, str, list[str]]]:
    rows = await pool.fetch("SELECT position, resource_id, user_ids FROM update_changes ORDER BY position, resource_id")
    return [(row["position"], row["resource_id"], sorted(row["user_ids"])) for row in rows]


async def importers(pool: asyncpg.Pool) -> None:
    """u1 and u2 hold version 1 of r1 and r2."""
    await apply(
        pool,
        published("r1", 1, at_time=at(0)),
        published("r2", 1, at_time=at(0)),
        *(imported(user, resource, "c1", at(1)) for user in ("u1", "u2") for resource in ("r1", "r2")),
    )


async def test_a_change_names_the_users_whose_update_changed_once_committed(pool):
    await importers(pool)
    assert await changes(pool) == []  # holding the latest version: no update, no change
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await ingest.apply_events(conn, [published("r1", 2, at_time=at(2))])
        staged = await conn.fetch("SELECT position, user_ids FROM update_changes")
        assert [(row["position"], sorted(row["user_ids"])) for row in staged] == [(None, ["u1", "u2"])]
        assert await changes(pool) == []  # not committed: nobody sees it
        await transaction.commit()
    [(position, resource, users)] = await changes(pool)
    assert (resource, users) == ("r1", ["u1", "u2"])
    async with pool.acquire() as conn:
        assert position == await update_stream.current_position(conn)


async def test_positions_follow_the_commit_order_not_the_order_of_the_writes(pool):
    await importers(pool)
    async with pool.acquire() as first, pool.acquire() as second:
        first_transaction = first.transaction()
        await first_transaction.start()
        await ingest.apply_events(first, [published("r1", 2, at_time=at(2))])  # written first...
        async with second.transaction():
            await ingest.apply_events(second, [published("r2", 2, at_time=at(2))])  # ...committed first
        await first_transaction.commit()
    assert [(resource, position is not None) for position, resource, _ in await changes(pool)] == [
        ("r2", True),
        ("r1", True),
    ]


async def test_a_write_rolled_back_to_a_savepoint_leaves_no_change(pool):
    await importers(pool)
    async with pool.acquire() as conn, conn.transaction():
        await ingest.apply_events(conn, [published("r1", 2, at_time=at(2))])
        savepoint = conn.transaction()
        await savepoint.start()
        await ingest.apply_events(conn, [published("r2", 2, at_time=at(2))])
        await savepoint.rollback()
    assert [resource for _, resource, _ in await changes(pool)] == ["r1"]


async def test_the_commit_notifies_the_last_position(pool, database_url):
    await importers(pool)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(update_stream.CHANGES_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
        await apply(pool, published("r1", 2, at_time=at(2)), published("r2", 2, at_time=at(2)))
        async with asyncio.timeout(30):
            payload = await heard.get()
    finally:
        await listener.close()
    assert [position for position, _, _ in await changes(pool)][-1] == int(payload)
    assert heard.empty()  # one notification a transaction


async def test_pruning_drops_what_is_older_than_the_window(pool):
    await importers(pool)
    await apply(pool, published("r1", 2, at_time=at(2)))
    await pool.execute("UPDATE update_changes SET changed_at = changed_at - interval '2 hours'")
    await apply(pool, published("r2", 2, at_time=at(2)))
    pruning = asyncio.create_task(update_stream.prune_forever(pool, retention_seconds=3600, interval=0.05))
    try:
        async with asyncio.timeout(30):
            while [resource for _, resource, _ in await changes(pool)] != ["r2"]:
                await asyncio.sleep(0.05)
    finally:
        pruning.cancel()


async def add_importers(pool: asyncpg.Pool, resource: str, importers: int) -> None:
    """Version 1 of the resource held by `importers` users, written as the consumer would have."""
    await apply(pool, published(resource, 1, at_time=at(0)))
    await pool.execute(
        """
        INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
        SELECT 'u' || n, $1, 'c1', 'Course', $1 || '-v1', 1, now() FROM generate_series(1, $2::int) AS n
        """,
        resource,
        importers,
    )


async def test_a_large_change_is_staged_in_chunks_each_update_pointing_to_its_own(pool):
    importers = 2 * updates.CHANGE_CHUNK_USERS + 123
    await add_importers(pool, "r1", importers)
    await apply(pool, published("r1", 2, at_time=at(2)))
    rows = await pool.fetch("SELECT position, chunk, user_ids, user_count FROM update_changes ORDER BY chunk")
    assert [row["chunk"] for row in rows] == [0, 1, 2]
    assert all(row["user_count"] == len(row["user_ids"]) <= updates.CHANGE_CHUNK_USERS for row in rows)
    chunk_of = {user: row["chunk"] for row in rows for user in row["user_ids"]}
    assert len(chunk_of) == importers
    written = await pool.fetch(
        "SELECT a.user_id, a.change_chunk FROM available_updates a JOIN update_changes c "
        "ON (c.staged_by, c.resource_id, c.chunk) = (a.changed_by, a.resource_id, a.change_chunk)"
    )
    assert {row["user_id"]: row["change_chunk"] for row in written} == chunk_of


async def test_a_removed_update_leaves_a_tombstone_pointing_to_its_change(pool):
    await importers(pool)
    await apply(pool, published("r1", 2, at_time=at(2)))
    await updates.ignore_update(pool, "u1", "r1", None)
    [tombstone] = await pool.fetch("SELECT * FROM removed_updates")
    assert (tombstone["user_id"], tombstone["resource_id"]) == ("u1", "r1")
    change = await pool.fetchrow(
        "SELECT position, user_ids FROM update_changes WHERE staged_by = $1 AND resource_id = 'r1' AND chunk = $2",
        tombstone["removed_by"],
        tombstone["change_chunk"],
    )
    assert change["user_ids"] == ["u1"]
    assert change["position"] == await pool.fetchval("SELECT max(position) FROM update_changes")


async def test_a_read_of_changes_carries_a_bounded_number_of_users(pool):
    await importers(pool)
    for version in range(2, 12):  # ten changes naming two users each
        await apply(pool, published("r1", version, at_time=at(version)))
    async with pool.acquire() as conn:
        everything = await update_stream.changes_after(conn, 0, 1000)
        assert len(everything) == 10
        bounded = await update_stream.changes_after(conn, 0, 5)
        assert [len(change.user_ids) for change in bounded] == [2, 2, 2]  # the third begins under 5 users
        assert [change.position for change in bounded] == [change.position for change in everything[:3]]
        assert len(await update_stream.changes_after(conn, 0, 1)) == 1  # never none


async def test_a_tombstone_is_pruned_with_its_change_not_before(pool):
    await importers(pool)
    await apply(pool, published("r1", 2, at_time=at(2)))
    await updates.ignore_update(pool, "u1", "r1", None)
    await pool.execute("UPDATE removed_updates SET removed_at = removed_at - interval '2 hours'")
    await update_stream.prune(pool, retention_seconds=3600)
    assert await pool.fetchval("SELECT count(*) FROM removed_updates") == 1  # its change is kept yet
    await pool.execute("UPDATE update_changes SET changed_at = changed_at - interval '2 hours'")
    await update_stream.prune(pool, retention_seconds=3600)
    assert await pool.fetchval("SELECT count(*) FROM removed_updates") == 0
