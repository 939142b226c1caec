"""The replicated cluster of tests/cluster.py does what it says: the synchronous standby has a
commit when it returns, the delayed one only after its delay, a standby stops and starts again,
PgBouncer passes transactions through, and a standby refuses LISTEN."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import secrets
import time
from typing import Any

import asyncpg
import pytest

from tests.cluster import Replicated

DATABASE = "cluster_check"


@pytest.fixture(scope="module")
def cluster(postgres_cluster: Replicated) -> Replicated:
    """The session's cluster with a database of this module's, replayed on both standbys."""
    postgres_cluster.cluster.create_database(DATABASE)
    postgres_cluster.primary.sql("CREATE TABLE notes (body text PRIMARY KEY)", database=DATABASE)
    for standby in (postgres_cluster.synchronous, postgres_cluster.delayed):
        postgres_cluster.cluster.wait_replayed(standby)
    return postgres_cluster


@asynccontextmanager
async def connected(url: str, **options: Any) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url, **options)
    try:
        yield conn
    finally:
        await conn.close()


async def write_note(cluster: Replicated) -> str:
    body = secrets.token_hex(8)
    async with connected(cluster.primary.url(DATABASE)) as conn:
        await conn.execute("INSERT INTO notes VALUES ($1)", body)
    return body


async def has_note(url: str, body: str) -> bool:
    async with connected(url) as conn:
        return bool(await conn.fetchval("SELECT count(*) FROM notes WHERE body = $1", body))


async def test_a_commit_is_on_the_synchronous_standby_when_it_returns(cluster):
    body = await write_note(cluster)

    assert await has_note(cluster.synchronous.url(DATABASE), body)


async def test_the_delayed_standby_has_a_commit_only_after_its_delay(cluster):
    before_commit = time.monotonic()  # the commit is later: however long the write takes, it is a bound
    body = await write_note(cluster)

    assert not await has_note(cluster.delayed.url(DATABASE), body)
    cluster.cluster.wait_replayed(cluster.delayed, timeout=cluster.apply_delay + 5)
    assert await has_note(cluster.delayed.url(DATABASE), body)
    assert time.monotonic() - before_commit > cluster.apply_delay - 0.5


async def test_a_stopped_standby_refuses_connections_and_serves_again_once_started(cluster):
    cluster.delayed.stop()
    try:
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(cluster.delayed.url(DATABASE), timeout=5)
    finally:
        cluster.delayed.start()

    async with connected(cluster.delayed.url(DATABASE)) as conn:
        assert await conn.fetchval("SELECT pg_is_in_recovery()")


async def test_pgbouncer_passes_a_transaction_through(cluster):
    body = secrets.token_hex(8)
    settings = {"timezone": "UTC", "application_name": "cluster-check"}
    pgbouncer = connected(cluster.pgbouncer.url(DATABASE), statement_cache_size=0, server_settings=settings)
    async with pgbouncer as conn, conn.transaction():
        await conn.execute("INSERT INTO notes VALUES ($1)", body)
        found = await conn.fetchval("SELECT count(*) FROM notes WHERE body = $1", body)
        backend = await conn.fetchval("SELECT current_setting('application_name')")

    assert found == 1 and backend == "cluster-check"
    assert await has_note(cluster.primary.url(DATABASE), body)


async def test_a_standby_refuses_listen(cluster):
    async with connected(cluster.synchronous.url(DATABASE)) as conn:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError, match="cannot execute LISTEN during recovery"):
            await conn.add_listener("updates", lambda *_: None)
