"""The consumer through PgBouncer in transaction mode (README: "Read replicas and a connection
pooler"): the property test of the event semantics, and the tests of fencing and of members sharing
the partitions, run again here with the database reached through the pooler
(DATABASE_TRANSACTION_POOLER), on a cluster of the tests' own (tests/cluster.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
import secrets

import asyncpg
import pytest

from core import db
from tests.cluster import Replicated
from tests.consumer.test_consumer import (
    test_a_revoked_owner_cannot_commit_late as test_a_revoked_owner_cannot_commit_late,
)
from tests.consumer.test_consumer import (
    test_two_members_share_the_partitions_and_apply_each_event_once as test_two_members_share_the_partitions_and_apply_each_event_once,  # noqa: E501
)
from tests.consumer.test_semantics_property import (
    test_tables_match_the_definition_for_any_delivery as test_tables_match_the_definition_for_any_delivery,
)
from tests.factories import empty_tables


@pytest.fixture(scope="module")
def pooled_database(postgres_cluster: Replicated) -> str:
    """A migrated database of this module's own on the cluster; its URL through PgBouncer."""
    name = f"commons_users_pooled_{secrets.token_hex(4)}"
    postgres_cluster.cluster.create_database(name)
    db.migrate(postgres_cluster.primary.url(name))
    return postgres_cluster.pgbouncer.url(name)


@pytest.fixture
async def pool(pooled_database: str) -> AsyncIterator[asyncpg.Pool]:
    """Overrides tests/conftest.py's: the consumer, and the tests' own statements, go through PgBouncer."""
    pool = await db.create_pool(pooled_database, min_size=1, max_size=8, transaction_pooler=True)
    await empty_tables(pool)
    yield pool
    await pool.close()
