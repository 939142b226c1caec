"""The `commons-users` command: sessions for existing users, configuration errors."""

import asyncio
import os
import subprocess
import sys

from tests.factories import JWT_SECRET, add_user

COMMAND = [sys.executable, "-m", "service"]


def run(*args, **env):
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JWT_SECRET": JWT_SECRET, **env},
    )


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


def test_bad_configuration_is_reported_by_variable_without_its_value_nor_a_traceback(database_url):
    replica = "http://reader:replica-password@replica/db"
    result = run("migrate", DATABASE_URL=database_url, JWT_SECRET="short-secret", DATABASE_REPLICA_URLS=replica)
    assert result.returncode == 2
    assert "JWT_SECRET:" in result.stderr and "DATABASE_REPLICA_URLS:" in result.stderr
    assert "short-secret" not in result.stderr and "replica-password" not in result.stderr
    assert "Traceback" not in result.stderr
