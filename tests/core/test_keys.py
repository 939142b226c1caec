"""Where each table goes past one primary (docs/scaling.md, "Past one primary: Citus"), and what that
placement asks of the keys: every table has a stated place; every unique key of a table distributed
by user is led by its user column; every foreign key of such a table points to a reference table or,
by the user column, to another table distributed by user. Citus refuses a unique constraint without
the distribution column, and a foreign key between distributed tables that skips it."""

import asyncpg
import pytest

# Distributed by the user, all in one co-location group: each table and the column that names its user.
BY_USER = {
    "users": "id",
    "imports": "user_id",
    "imported_resources": "user_id",
    "favorites": "user_id",
    "available_updates": "user_id",
    "removed_updates": "user_id",
}
# Distributed by user_id too once a session id names its user; until then keyed by what every lookup has,
# the hash of the session id.
SESSIONS = {"sessions"}
# Replicated to every node.
REFERENCE = {"resources", "resource_versions", "resource_deletions"}
# Ordinary tables on the coordinator: the commit-ordered log of changes, the consumer's offsets, and dbmate's.
COORDINATOR = {"update_changes", "consumer_offsets", "schema_migrations"}


@pytest.fixture
async def conn(database_url):
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def test_every_table_has_a_place(conn):
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    tables = {row["tablename"] for row in rows}
    placed = set(BY_USER) | SESSIONS | REFERENCE | COORDINATOR
    assert tables == placed, (
        'a table without a place past one primary: say where it goes in docs/scaling.md ("Past one primary: '
        'Citus") and in this module'
    )


async def test_every_unique_key_of_a_table_distributed_by_user_is_led_by_its_user(conn):
    rows = await conn.fetch(
        """
        SELECT t.relname AS table_name, i.relname AS index_name, a.attname AS first_column
        FROM pg_index x
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
        WHERE n.nspname = 'public' AND x.indisunique AND t.relname = ANY($1::text[])
        """,
        list(BY_USER),
    )
    assert {row["table_name"] for row in rows} == set(BY_USER)  # each has its primary key at least
    led_otherwise = [
        f"{row['index_name']} ({row['first_column'] or 'an expression'} first)"
        for row in rows
        if row["first_column"] != BY_USER[row["table_name"]]
    ]
    assert led_otherwise == []


async def test_every_foreign_key_of_a_table_distributed_by_user_stays_on_its_node(conn):
    rows = await conn.fetch(
        """
        SELECT c.conname, t.relname AS table_name, r.relname AS referenced,
               ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i) AS columns,
               ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY AS k(n, i)
                     JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)
                   AS referenced_columns
        FROM pg_constraint c
        JOIN pg_class t ON t.oid = c.conrelid
        JOIN pg_class r ON r.oid = c.confrelid
        WHERE c.contype = 'f' AND t.relname = ANY($1::text[])
        """,
        list(BY_USER),
    )
    assert rows, "favorites refers to users and resources"
    for row in rows:
        if row["referenced"] in REFERENCE:
            continue
        assert row["referenced"] in BY_USER, row["conname"]
        pairs = dict(zip(row["columns"], row["referenced_columns"], strict=True))
        assert pairs.get(BY_USER[row["table_name"]]) == BY_USER[row["referenced"]], row["conname"]
