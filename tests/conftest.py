"""Fixtures every kind of test shares: a throwaway, migrated database per test run, emptied before
every test, and empty ones on demand; the app served over real HTTP by aiohttp's test server; a
Kafka-protocol broker, and settings giving each test topics and a consumer group of its own; a
streaming-replication cluster with PgBouncer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
import os
import secrets

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
import asyncpg
import pytest
from yarl import URL

from core import db
from core.settings import Settings
from service.app import create_app
from tests.cluster import Replicated, replicated
from tests.factories import empty_tables, make_settings
from tests.services import kafka_broker, postgres_server

# The longest tests (minutes, or tens of seconds, on 2 cores), taken first by the workers of `make test`
# (pytest-xdist), so that none of them starts near the end of the run and holds it up.
LONGEST_FIRST = (
    "tests/bench/test_benchmarks_run.py",
    "tests/api/test_schemathesis.py",
    "tests/consumer/test_semantics_property.py",
    "tests/consumer/test_through_pgbouncer.py::test_tables_match_the_definition_for_any_delivery",
    "tests/consumer/test_faults.py",
    "tests/api/test_dlq_command.py",
    "tests/api/test_audit_command.py",
    "tests/devtools/test_make_run.py",
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Once pytest has ordered the tests (by their parametrized fixtures), LONGEST_FIRST first, in
    its order."""
    yield

    def rank(item: pytest.Item) -> int:
        return next((n for n, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)


async def _admin(server_url: str, statement: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with postgres_server(os.environ) as server_url:
        name = f"commons_users_test_{secrets.token_hex(4)}"
        asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
        try:
            url = str(URL(server_url).with_path(f"/{name}"))
            db.migrate(url)
            yield url
        finally:
            asyncio.run(_admin(server_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """The URL of a database with nothing in it, on the tests' server; dropped afterwards."""
    server = URL(database_url).with_path("/postgres")
    name = f"commons_users_empty_{secrets.token_hex(4)}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(str(server))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    yield str(server.with_path(f"/{name}"))
    asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, min_size=1, max_size=8)
    await empty_tables(pool)
    yield pool
    await pool.close()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def client(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings)), cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Replicated]:
    """A streaming-replication cluster of the tests' own (tests/cluster.py), started when a test
    first asks for it, for the rest of the run."""
    with replicated() as setup:
        yield setup


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with kafka_broker(os.environ) as bootstrap:
        yield bootstrap


@pytest.fixture
def consumer_settings(database_url: str, kafka_bootstrap: str) -> Settings:
    """Settings with topics and a consumer group of this test's own."""
    suffix = secrets.token_hex(4)
    return make_settings(
        database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_create_topics=True,
        kafka_topic_partitions=2,
        kafka_resource_topic=f"resource-events-{suffix}",
        kafka_user_topic=f"user-events-{suffix}",
        kafka_consumer_group=f"commons-users-{suffix}",
        # Short group timeouts: the local broker holds a join for half the session timeout.
        consumer_session_timeout_ms=2000,
        consumer_heartbeat_interval_ms=200,
    )
