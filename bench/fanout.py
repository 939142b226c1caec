"""Fan-out: a new version of a resource imported by many users, from the moment it is produced to
the moment an importer sees it in the API, through a real broker, consumer and API; at several
sizes, on statistics that predate the imports (stale) and on fresh ones, beside a bare
INSERT ... SELECT of as many rows. Then the largest size again on tables that already hold 20
imports and available updates per importer (2,000,000 in the full profile), built set-based, each
run beside a bare INSERT ... SELECT of the very rows the fan-out wrote into a copy of
`available_updates` of the same size and indexes, in the same database.

    .venv/bin/python -m bench.fanout [--quick]
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from datetime import UTC, datetime
import time
from typing import Any
import uuid

import aiohttp
import asyncpg

from bench import fanout_tables, harness
from consumers import topics
from core import db
from core.settings import Settings
from devtools.tansu import tansu_broker

RESOURCE = "r-fanout"
TOPIC = "bench.resource-events"
USER_TOPIC = "bench.user-events"


def version_event(number: int, resource: str = RESOURCE) -> dict[str, Any]:
    at = datetime(2026, 1, number, tzinfo=UTC).isoformat()
    return {
        "type": "resource.version.published",
        "eventId": str(uuid.uuid4()),
        "occurredAt": at,
        "schemaVersion": 1,
        "resourceId": resource,
        "versionId": f"{resource}-v{number}",
        "versionNumber": number,
        "versionNotes": f"Version {number}",
        "publishedAt": at,
        "resource": {
            "title": "A resource everyone imported",
            "description": "Fractions.",
            "type": "course",
            "account": {"id": "acct-1", "name": "District"},
            "authors": [{"id": "author-1", "name": "An Author"}],
            "tags": ["math"],
            "createDate": "2025-01-01T00:00:00Z",
            "updateDate": at,
        },
    }


# `$1` users `<$3>-n` hold version 1 of the resource $2 in one course each.
IMPORTERS = """
INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
SELECT $3 || '-' || n, $2, 'c-' || n, 'Course ' || n, $2 || '-v1', 1, timestamptz '2025-09-01' + n * interval '1 second'
FROM generate_series(1, $1::int) AS n
"""


async def prepare(database: str, importers: int, *, stale: bool, prefix: str = "fan") -> None:
    """Version 1 of the resource, and its importers `<prefix>-n`. `stale`: the planner's statistics
    were taken when nobody had imported it yet (and autovacuum may not refresh them)."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute("ALTER TABLE imports SET (autovacuum_enabled = false)")
        await connection.execute("ALTER TABLE available_updates SET (autovacuum_enabled = false)")
        await connection.execute("ANALYZE")
        await connection.execute(IMPORTERS, importers, RESOURCE, prefix)
        await connection.execute(
            """
            INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)
            VALUES ($1 || '-1', 'acct-1', 'District', 'Teacher', 't@example.edu', now(), gen_random_uuid())
            """,
            prefix,
        )
        if not stale:
            await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def visible(http: aiohttp.ClientSession, url: str, session_id: str, version_id: str) -> bool:
    async with http.get(url, headers={"X-Session-ID": session_id}) as response:
        return response.status == 200 and (await response.json())["versionId"] == version_id


async def one(importers: int, *, stale: bool, template: str | None = None) -> dict[str, float]:
    """Produce version 1 (waiting until it is applied), then version 2; seconds until importer
    `fan-1` sees version 2, and the rows the fan-out wrote. On a copy of the `template`, whose
    users `u-n` are the importers (`u-1` is watched): also the seconds until the commit, the WAL
    written from the produce on, and the reference (the same rows into its copy of the table)."""
    name = f"{harness.PREFIX}_fanout_{importers}_{'stale' if stale else 'fresh'}{'_large' if template else ''}"
    prefix = "u" if template else "fan"
    if template:
        await harness.drop_database(name)
        await harness._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        database = harness.database_url(name)
    else:
        database = await harness.create_database(name)
    try:
        if not template:
            db.migrate(database)
        pool = await db.create_pool(database, min_size=1, max_size=2)
        with ExitStack() as stack:
            bootstrap = stack.enter_context(tansu_broker())
            settings = Settings(
                database_url=database,
                jwt_secret=harness.JWT_SECRET,
                kafka_bootstrap_servers=bootstrap,
                kafka_resource_topic=TOPIC,
                kafka_user_topic=USER_TOPIC,
            )
            await topics.produce_documents(settings, [version_event(1)])
            env = harness.service_env(
                database,
                KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                KAFKA_RESOURCE_TOPIC=TOPIC,
                KAFKA_USER_TOPIC=USER_TOPIC,
                CONSUMER_HEALTH_PORT=str(harness.free_port()),
            )
            stack.enter_context(
                harness.process([str(harness.ROOT / ".venv/bin/python"), "-m", "service", "consumer"], env)
            )
            while not await pool.fetchval("SELECT EXISTS (SELECT FROM resources WHERE id = $1)", RESOURCE):
                await asyncio.sleep(0.05)
            await prepare(database, importers, stale=stale, prefix=prefix)
            from core import sessions

            session_id = await sessions.open_session(pool, f"{prefix}-1", 3600)
            base = stack.enter_context(harness.service_api(harness.ROOT / ".venv/bin/python", database))
            url = f"{base}/api/users/{prefix}-1/updates/{RESOURCE}"
            if template:  # the fan-out and the reference each start right after a checkpoint
                await pool.execute("CHECKPOINT")
            lsn, stop, seen = await pool.fetchval(fanout_tables.WAL_POSITION), asyncio.Event(), fanout_tables.Seen()
            watching = asyncio.create_task(fanout_tables.watch(pool, seen, stop) if template else stop.wait())
            async with aiohttp.ClientSession() as http:
                produced, produced_at = time.perf_counter(), time.time()
                await topics.produce_documents(settings, [version_event(2)])
                while not await visible(http, url, session_id, f"{RESOURCE}-v2"):
                    await asyncio.sleep(0.005)
                seconds = time.perf_counter() - produced
            stop.set()
            await watching
            figures = {"seconds": round(seconds, 3), "rows": await pool.fetchval(fanout_tables.ROWS, RESOURCE)}
            if template:
                figures |= fanout_tables.steps(
                    seen, produced_at, await pool.fetchval(fanout_tables.COMMITTED, RESOURCE)
                )
                figures["wal_mb"] = round((await pool.fetchval(fanout_tables.WAL_POSITION) - lsn) / 1e6, 1)
                figures |= await fanout_tables.reference(pool, RESOURCE)
        await pool.close()
        return figures
    finally:
        await harness.drop_database(name)


async def bare_insert(importers: int) -> float:
    """Seconds for INSERT ... SELECT of as many available_updates rows (the physical limit)."""
    name = f"{harness.PREFIX}_fanout_bare_{importers}"
    database = await harness.create_database(name)
    try:
        db.migrate(database)
        connection = await asyncpg.connect(database)
        try:
            started = time.perf_counter()
            await connection.execute(
                """
                INSERT INTO available_updates (user_id, resource_id, version_number, published_at, courses)
                SELECT 'fan-' || n, $2, 2, now(),
                       json_build_array(json_build_object('courseId', 'c-' || n, 'courseName', 'Course ' || n,
                                                          'importDate', now(), 'versionCreateDate', now()))
                FROM generate_series(1, $1::int) AS n
                """,
                importers,
                RESOURCE,
            )
            return round(time.perf_counter() - started, 3)
        finally:
            await connection.close()
    finally:
        await harness.drop_database(name)


async def run(profile: harness.Profile) -> dict[str, Any]:
    sizes = [profile.fanout_importers // 10, profile.fanout_importers]  # the growth from one to the other
    result: dict[str, Any] = {}
    for importers in sizes:
        for stale in (True, False):
            result[f"{importers} importers, {'stale' if stale else 'fresh'} statistics"] = await one(
                importers, stale=stale
            )
        result[f"{importers} rows, bare INSERT ... SELECT"] = {"seconds": await bare_insert(importers)}
    result |= await large(profile.fanout_importers)
    return result


async def large(importers: int, runs: int = 1) -> dict[str, Any]:
    """The fan-out on the large tables (fanout_tables), stale and fresh statistics in turns, each
    beside its reference. The keys name no importers: bench/report.py reads those of `run`."""
    template = f"{harness.PREFIX}_fanout_{importers}_large_template"
    result: dict[str, Any] = {}
    try:
        result[f"large tables: {importers * fanout_tables.OTHER} rows"] = await fanout_tables.build(template, importers)
        for n in range(runs):
            for stale in (True, False):
                figures = await one(importers, stale=stale, template=template)
                figures["ratio"] = round(figures["seconds"] / figures["reference_seconds"], 2)
                if "refresh_cpu_seconds" in figures and figures.get("reference_cpu_seconds"):
                    figures["cpu_ratio"] = round(figures["refresh_cpu_seconds"] / figures["reference_cpu_seconds"], 2)
                key = f"beside {importers * fanout_tables.OTHER} rows, {'stale' if stale else 'fresh'} statistics"
                result[key + (f" ({n + 1})" if runs > 1 else "")] = figures
    finally:
        await harness.drop_database(template)
    return result


if __name__ == "__main__":
    harness.main(run, __doc__)
