"""The `commons-users` command: migrate (idempotent, reversible), session, configuration errors."""

import asyncio
import os
import secrets
import subprocess
import sys

import asyncpg
import pytest
from yarl import URL

from service import db
from tests.conftest import JWT_SECRET
from tests.factories import add_user

COMMAND = [sys.executable, "-m", "service"]


def run(*args, **env):
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JWT_SECRET": JWT_SECRET, **env})


@pytest.fixture
def empty_database(database_url):
    server = URL(database_url).with_path("/postgres")
    name = f"commons_users_empty_{secrets.token_hex(4)}"

    async def admin(statement):
        conn = await asyncpg.connect(str(server))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield str(server.with_path(f"/{name}"))
    asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def tables(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        return {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await conn.close()


def test_migrate_applies_to_an_empty_database_and_is_idempotent(empty_database):
    first = run("migrate", DATABASE_URL=empty_database)
    assert first.returncode == 0, first.stderr
    second = run("migrate", DATABASE_URL=empty_database)
    assert second.returncode == 0, second.stderr
    assert "Applying" in first.stdout and "Applying" not in second.stdout
    assert {"users", "sessions", "resources", "imports", "favorites", "available_updates",
            "consumer_offsets"} <= asyncio.run(tables(empty_database))


def test_every_migration_rolls_back(empty_database):
    db.migrate(empty_database)
    migrations = sorted(db.MIGRATIONS_DIR.glob("*.sql"))
    for _ in migrations:
        subprocess.run([db._dbmate(), "--url", db.dbmate_url(empty_database), "--migrations-dir",
                        str(db.MIGRATIONS_DIR), "--no-dump-schema", "rollback"], check=True, capture_output=True)
    assert asyncio.run(tables(empty_database)) == {"schema_migrations"}
    db.migrate(empty_database)  # and forward again
    assert "users" in asyncio.run(tables(empty_database))


def test_the_tests_run_on_the_migrated_schema(database_url, empty_database):
    db.migrate(empty_database)

    async def schema(dsn):
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await conn.fetch(
                "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2")]
        finally:
            await conn.close()

    assert asyncio.run(schema(database_url)) == asyncio.run(schema(empty_database))


async def test_session_command_mints_a_working_session(client, pool, database_url):
    await add_user(pool, "u1")
    result = await asyncio.to_thread(run, "session", "u1", DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    session_id = result.stdout.strip()
    response = await client.get("/api/users/u1/favorites", headers={"X-Session-ID": session_id})
    assert response.status == 200


async def test_session_command_refuses_an_unknown_user(pool, database_url):
    result = await asyncio.to_thread(run, "session", "nobody", DATABASE_URL=database_url)
    assert result.returncode != 0
    assert "no user 'nobody'" in result.stderr
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 0


def test_bad_configuration_is_reported_without_a_traceback(database_url):
    result = run("migrate", DATABASE_URL=database_url, JWT_SECRET="short")
    assert result.returncode != 0
    assert "jwt_secret" in result.stderr and "Traceback" not in result.stderr
