"""The schema migrations: `commons-users migrate` on an empty database, idempotent, reversible, and
the schema the tests run on."""

import asyncio
import os
import subprocess
import sys

import asyncpg

from core import db
from tests.factories import JWT_SECRET


def migrate_command(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JWT_SECRET": JWT_SECRET, "DATABASE_URL": database_url},
    )


async def tables(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


def test_migrate_applies_to_an_empty_database_and_is_idempotent(empty_database):
    first = migrate_command(empty_database)
    assert first.returncode == 0, first.stderr
    second = migrate_command(empty_database)
    assert second.returncode == 0, second.stderr
    assert "Applying" in first.stdout and "Applying" not in second.stdout
    assert {
        "users",
        "sessions",
        "resources",
        "imports",
        "favorites",
        "available_updates",
        "consumer_offsets",
    } <= asyncio.run(tables(empty_database))


def test_every_migration_rolls_back(empty_database):
    db.migrate(empty_database)
    with db.migrations_dir() as migrations:
        count = len(list(migrations.glob("*.sql")))
    assert count >= 2
    for _ in range(count):
        rolled_back = db.dbmate(empty_database, "rollback")
        assert rolled_back.returncode == 0, rolled_back.stderr
    assert asyncio.run(tables(empty_database)) == {"schema_migrations"}
    db.migrate(empty_database)  # and forward again
    assert "users" in asyncio.run(tables(empty_database))


def test_the_tests_run_on_the_migrated_schema(database_url, empty_database):
    db.migrate(empty_database)

    async def schema(dsn):
        conn = await asyncpg.connect(dsn)
        try:
            columns = await conn.fetch(
                "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2"
            )
            routines = await conn.fetch(
                "SELECT routine_name FROM information_schema.routines WHERE routine_schema = 'public' ORDER BY 1"
            )
            return [tuple(r) for r in columns], [tuple(r) for r in routines]
        finally:
            await conn.close()

    assert asyncio.run(schema(database_url)) == asyncio.run(schema(empty_database))
