"""asyncpg through PgBouncer in transaction mode (tests/cluster.py): with
DATABASE_TRANSACTION_POOLER, statements that stand alone, many at once, each get their own answer;
without it, asyncpg's prepared statements land on server sessions that never saw them."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from core import db
from tests.cluster import Replicated

STATEMENTS = 300


async def answers(pool: asyncpg.Pool) -> list[object]:
    async def one(n: int) -> object:
        try:
            return await pool.fetchval("SELECT jsonb_build_object('n', $1::int)", n)
        except asyncpg.PostgresError as exc:
            return exc

    return list(await asyncio.gather(*(one(n) for n in range(STATEMENTS))))


@pytest.mark.parametrize("transaction_pooler", [True, False])
async def test_statements_standing_alone_through_a_transaction_pooler(
    postgres_cluster: Replicated, transaction_pooler: bool
) -> None:
    url = postgres_cluster.pgbouncer.url("postgres")
    pool = await db.create_pool(url, min_size=8, max_size=8, transaction_pooler=transaction_pooler)
    try:
        got = await answers(pool)
    finally:
        await pool.close()
    if transaction_pooler:
        assert got == [{"n": n} for n in range(STATEMENTS)]
    else:
        failures = {type(answer) for answer in got if isinstance(answer, Exception)}
        assert failures <= {asyncpg.InvalidSQLStatementNameError, asyncpg.DuplicatePreparedStatementError}
        assert failures, "every statement found its prepared statement: the setting would not be needed"
