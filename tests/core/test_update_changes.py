"""The changes behind the live update stream (core/update_stream.py): staged by the writers' own
statement, numbered in commit order as the transaction commits, announced then, and never for a
write that was rolled back."""

from __future__ import annotations

import asyncio

import asyncpg

from consumers.main import prune_update_changes
from core import ingest, update_stream
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
        async with asyncio.timeout(5):
            payload = await heard.get()
    finally:
        await listener.close()
    assert [position for position, _, _ in await changes(pool)][-1] == int(payload)
    assert heard.empty()  # one notification a transaction


async def test_the_consumer_prunes_what_is_older_than_the_window(pool):
    await importers(pool)
    await apply(pool, published("r1", 2, at_time=at(2)))
    await pool.execute("UPDATE update_changes SET changed_at = changed_at - interval '2 hours'")
    await apply(pool, published("r2", 2, at_time=at(2)))
    pruning = asyncio.create_task(prune_update_changes(pool, retention_seconds=3600, interval=0.05))
    try:
        async with asyncio.timeout(5):
            while [resource for _, resource, _ in await changes(pool)] != ["r2"]:
                await asyncio.sleep(0.05)
    finally:
        pruning.cancel()
