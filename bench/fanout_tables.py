"""The large runs of bench/fanout.py: a fan-out measured where `imports` and `available_updates`
already hold OTHER rows per importer (2,000,000 in the full profile), beside a copy of
`available_updates` (same rows, same indexes) that a bare INSERT ... SELECT of the fan-out's rows
goes into. The tables are built set-based in a template database, each filled without its
indexes, which are then built again as the migrations define them: tens of seconds for 2,000,000
rows. Then what a run measures beyond its seconds: the steps of the consumer's transaction, and
the CPU time of the backends that ran the refresh and the reference (when PostgreSQL runs on this
machine), which the load of a shared machine stretches far less than the seconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg

from bench import harness
from core import db

# Each importer imported OTHER resources (of RESOURCES, all at version 2) into a course each.
OTHER = 20
RESOURCES = 20_000

# In order: the resources and their two versions; OTHER imports of each of the `importers` users
# u-n, at version 1; an available update for each, as the refresh writes it (one pending course);
# the same rows in the reference's table. The last three are filled without their indexes.
TABLES = [
    (
        "resources",
        """
        INSERT INTO resources (id, title, description, type, account_id, account_name, create_date, update_date,
                               version_id, version_number, version_notes, published_at, event_id)
        SELECT 'r' || n, 'Resource ' || n, 'Fractions.', 'course', 'acct-1', 'District',
               timestamptz '2025-01-01', timestamptz '2026-01-02', 'r' || n || '-v2', 2, 'Version 2',
               timestamptz '2026-01-02', md5('r' || n)::uuid
        FROM generate_series(0, {resources} - 1) AS n
        """,
    ),
    (
        "resource_versions",
        """
        INSERT INTO resource_versions (resource_id, version_number, version_id, version_notes, published_at,
                                       update_date, event_id)
        SELECT id, v, id || '-v' || v, 'Version ' || v, timestamptz '2026-01-01' + (v - 1) * interval '1 day',
               timestamptz '2026-01-01' + (v - 1) * interval '1 day', md5(id || v)::uuid
        FROM resources, generate_series(1, 2) AS v
        """,
    ),
    (
        "imports",
        """
        INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
        SELECT 'u-' || u, 'r' || r, 'c-' || u || '-' || k, 'Course ' || k || ' of teacher ' || u, 'r' || r || '-v1', 1,
               timestamptz '2025-09-01' + ((u * 31 + k * 17) % 100000) * interval '1 minute'
        FROM generate_series(1, {importers}) AS u, generate_series(0, {other} - 1) AS k,
             LATERAL (SELECT (u * 31 + k * 7919) % {resources} AS r) AS drawn
        """,
    ),
    (
        "available_updates",
        """
        INSERT INTO available_updates (user_id, resource_id, version_number, published_at, courses)
        SELECT i.user_id, i.resource_id, r.version_number, r.published_at,
               json_build_array(json_build_object(
                   'courseId', i.course_id, 'courseName', i.course_name, 'importDate', api_time(i.imported_at),
                   'versionCreateDate', api_time(held.published_at)))
        FROM imports i JOIN resources r ON r.id = i.resource_id
        JOIN resource_versions held ON held.resource_id = i.resource_id AND held.version_number = i.version_number
        """,
    ),
    ("available_updates_reference", "INSERT INTO available_updates_reference SELECT * FROM available_updates"),
]


async def fill(conn: asyncpg.Connection, table: str, insert: str) -> None:
    """Run `insert` into `table` without its indexes, then build them again as they were."""
    key = await conn.fetchrow(
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype = 'p'",
        table,
    )
    assert key is not None
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1 AND indexname <> $2",
        table,
        key["conname"],
    )
    await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{key["conname"]}"')
    for index in indexes:
        await conn.execute(f'DROP INDEX "{index["indexname"]}"')
    await conn.execute(insert)
    await conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{key["conname"]}" {key["definition"]}')
    for index in indexes:
        await conn.execute(index["indexdef"])


async def build(name: str, importers: int) -> dict[str, float]:
    """The template database `name`: the migrated schema, the reference's copy of
    available_updates, TABLES for `importers` users, and statistics taken (in each run, the
    fan-out's importers arrive after them)."""
    database = await harness.create_database(name)
    db.migrate(database)
    started = time.perf_counter()
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute("CREATE TABLE available_updates_reference (LIKE available_updates INCLUDING ALL)")
        await conn.execute("ALTER TABLE available_updates_reference SET (autovacuum_enabled = false)")
        for table, insert in TABLES:
            sql = insert.format(importers=importers, resources=RESOURCES, other=OTHER)
            await (conn.execute(sql) if table.startswith("resource") else fill(conn, table, sql))
        await conn.execute("VACUUM ANALYZE")
        rows = await conn.fetchval("SELECT count(*) FROM available_updates")
    finally:
        await conn.close()
    return {"seconds": round(time.perf_counter() - started, 1), "imports": importers * OTHER, "available_updates": rows}


ROWS = "SELECT count(*) FROM available_updates WHERE resource_id = $1"
WAL_POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"  # the server's, whoever writes
COMMITTED = "SELECT extract(epoch FROM max(changed_at))::float8 FROM update_changes WHERE resource_id = $1"

# The transactions of the consumer as pg_stat_activity shows them, every 10 ms: when each began,
# and its statement (the refresh is the one that names `computed`, within the first 1,024 bytes
# that pg_stat_activity keeps) and when that began.
ACTIVITY = """
SELECT pid, extract(epoch FROM xact_start)::float8 AS began, extract(epoch FROM query_start)::float8 AS query_began,
       state = 'active' AS active, extract(epoch FROM state_change)::float8 AS changed,
       position('computed' IN query) > 0 AS refresh
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of a local process (a backend), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Seen(list[asyncpg.Record]):
    """The samples, and the CPU time of the refresh's backend when it was first seen at it."""

    cpu_at_refresh: float | None = None


async def watch(pool: asyncpg.Pool, seen: Seen, stop: asyncio.Event) -> None:
    while not stop.is_set():
        rows = await pool.fetch(ACTIVITY)
        if seen.cpu_at_refresh is None and (refresh := next((r for r in rows if r["refresh"]), None)):
            seen.cpu_at_refresh = cpu_seconds(refresh["pid"])
        seen += rows
        await asyncio.sleep(0.01)


def steps(seen: Seen, produced: float, committed: float) -> dict[str, float]:
    """Seconds from the produce to the start of the transaction that refreshed (the fetch and what
    comes before the refresh), to the refresh's start and end (the next statement's start, or the
    end of the statement as the state's change tells), and to the commit (the numbering trigger);
    and the CPU time of the backend from the refresh's start on (its first sample) to now, just
    after the commit. A refresh shorter than the sampling may go unseen: then the commit only."""
    at: dict[str, float] = {}
    figures: dict[str, Any] = {}
    if refresh := next((row for row in seen if row["refresh"]), None):
        same = [row for row in seen if row["began"] == refresh["began"]]
        ended = [row["query_began"] for row in same if row["query_began"] > refresh["query_began"]]
        ended += [row["changed"] for row in same if row["refresh"] and not row["active"]]
        at = {"transaction": refresh["began"], "refresh": refresh["query_began"], "refreshed": min(ended, default=0)}
        if seen.cpu_at_refresh is not None and (now := cpu_seconds(refresh["pid"])) is not None:
            figures["refresh_cpu_seconds"] = round(now - seen.cpu_at_refresh, 3)
    at["committed"] = committed
    return {f"{step}_seconds": round(t - produced, 3) for step, t in at.items() if t} | figures


async def reference(pool: asyncpg.Pool, resource: str) -> dict[str, float]:
    """The rows the fan-out wrote, inserted by a bare INSERT ... SELECT (and its commit) into the
    copy of available_updates (same rows, same indexes) after a checkpoint: seconds, WAL, the
    backend's CPU time, and the fan-out's over these."""
    await pool.execute(f"CREATE TABLE staged AS SELECT * FROM available_updates WHERE resource_id = '{resource}'")
    await pool.execute("VACUUM ANALYZE staged")
    await pool.execute("CHECKPOINT")
    async with pool.acquire() as conn:
        pid, lsn = await conn.fetchval("SELECT pg_backend_pid()"), await conn.fetchval(WAL_POSITION)
        cpu, started = cpu_seconds(pid), time.perf_counter()
        await conn.execute("INSERT INTO available_updates_reference SELECT * FROM staged")
        seconds, after = time.perf_counter() - started, cpu_seconds(pid)
        wal = await conn.fetchval(WAL_POSITION) - lsn
    figures = {"reference_seconds": round(seconds, 3), "reference_wal_mb": round(wal / 1e6, 1)}
    if cpu is not None and after is not None:
        figures["reference_cpu_seconds"] = round(after - cpu, 3)
    return figures
