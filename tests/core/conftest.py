"""Fixtures of the plan tests: a migrated database that nothing has analyzed."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from core import db


@pytest.fixture
async def fresh_pool(empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database that nothing has analyzed (autovacuum is off on every table)."""
    db.migrate(empty_database)
    pool = await db.create_pool(empty_database, min_size=1, max_size=2)
    tables = await pool.fetch("SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public'")
    for table in tables:
        await pool.execute(f"ALTER TABLE {table['name']} SET (autovacuum_enabled = false)")
    yield pool
    await pool.close()
