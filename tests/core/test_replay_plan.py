"""A reconnection's replay reads the user's own rows, whatever the others' changes: over a
retention window of changes that each name 100,000 users, it touches a few buffers per update of
the user, on tables never analyzed, analyzed before the changes arrived, and analyzed after them.
Its plan is shown by EXPLAIN (ANALYZE, BUFFERS)."""

import json
from typing import Any

import asyncpg
import pytest

from core import update_stream, updates

CHANGES = 20  # each names USERS users, as a new version of a resource imported by all of them
USERS = 100_000
USER = "u42"
MINE = 3  # the user's own updates among those changes; one more update of theirs was removed


async def add_window(pool: asyncpg.Pool) -> None:
    """CHANGES changes committed in one transaction, each staged in chunks like the refresh
    stages them; the user's updates and tombstone point to their chunks."""
    chunk = updates.CHANGE_CHUNK_USERS
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO update_changes (resource_id, chunk, user_ids, user_count)
            SELECT 'r' || r, c, ARRAY(SELECT 'u' || n FROM generate_series(c * $2 + 1, (c + 1) * $2) AS n), $2
            FROM generate_series(1, $1::int) AS r, generate_series(0, $3::int / $2 - 1) AS c
            """,
            CHANGES,
            chunk,
            USERS,
        )
        await conn.execute(
            """
            INSERT INTO available_updates (user_id, resource_id, version_number, published_at, courses,
                                           changed_by, change_chunk)
            SELECT $1, 'r' || r, 2, now(), '[]', pg_current_xact_id(), 0 FROM generate_series(1, $2::int) AS r;
            INSERT INTO removed_updates (user_id, resource_id, removed_by, change_chunk)
            VALUES ($1, 'r' || ($2::int + 1), pg_current_xact_id(), 0);
            """.replace("$1", f"'{USER}'").replace("$2", str(MINE)),
        )


def buffers(plan: dict[str, Any]) -> int:
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


@pytest.mark.parametrize("statistics", ["never analyzed", "taken before the changes", "fresh"])
async def test_a_replay_reads_the_users_own_rows_not_the_window(fresh_pool, statistics):
    if statistics == "taken before the changes":
        await fresh_pool.execute("ANALYZE")
    await add_window(fresh_pool)
    if statistics == "fresh":
        await fresh_pool.execute("VACUUM ANALYZE")
    upto = await fresh_pool.fetchval("SELECT max(position) FROM update_changes")

    document = await fresh_pool.fetchval(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {update_stream._REPLAY}", USER, 0, upto
    )
    plan = json.loads(document)[0]["Plan"]

    # A few index pages per update of the user; reading the changes that name them would read
    # about 200 rows of 10,000 ids each, thousands of pages.
    assert buffers(plan) <= 10 * (MINE + 1) + 20, json.dumps(plan, indent=1)
    replayed = await update_stream.replay(fresh_pool, USER, 0, upto)
    assert replayed is not None
    assert sorted(event.resource_id for event in replayed) == [f"r{n}" for n in range(1, MINE + 2)]
