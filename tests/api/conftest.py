"""The API suite runs twice: on the tests' PostgreSQL directly, and as deployed past one database,
with its reads on a streaming replica, its other statements through PgBouncer in transaction mode,
and the live update hub listening on the primary directly (README: "Read replicas and a connection
pooler"). The replica is synchronous (remote_apply): what a test writes on the primary is there
when the write returns, as it would be, a moment later, on any replica."""

from __future__ import annotations

from collections.abc import Iterator
import secrets

import pytest

from core import db
from tests.cluster import Replicated
from tests.factories import TOPOLOGIES


@pytest.fixture(scope="session", params=["direct", "replicas"])
def database_url(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    """The URL of the primary of the tests' database: their own reads and writes go there, while
    the apps they start reach it as the topology says (tests.factories.make_settings)."""
    if request.param == "direct":
        yield database_url
        return
    setup: Replicated = request.getfixturevalue("postgres_cluster")
    name = f"commons_users_test_{secrets.token_hex(4)}"
    setup.cluster.create_database(name)
    url = setup.primary.url(name)
    db.migrate(url)
    TOPOLOGIES[url] = {
        "database_url": setup.pgbouncer.url(name),
        "database_transaction_pooler": True,
        "database_listen_url": url,
        "database_replica_urls": [setup.synchronous.url(name)],
        "database_replica_check_seconds": 0.2,
    }
    try:
        yield url
    finally:
        del TOPOLOGIES[url]
