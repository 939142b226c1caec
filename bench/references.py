"""The limits the ingest benchmark measures the consumer against (bench/ingest.py): a bare
aiokafka read of the topic, a COPY of the same rows, and COPY into a staging table then one
upsert."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer
import asyncpg

from bench.streams import IMPORT_COLUMNS, Row


async def kafka_read(bootstrap: str, topic: str, count: int) -> dict[str, float]:
    """(a) A bare aiokafka read of the topic, no group, until `count` records came."""
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await reader.start()
    try:
        await reader.getmany(timeout_ms=0)  # connect and fetch metadata before the clock starts
        seen, started = 0, time.perf_counter()
        while seen < count:
            batches = await reader.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(records) for records in batches.values())
        seconds = time.perf_counter() - started
    finally:
        await reader.stop()
    return {"records": seen, "seconds": round(seconds, 3), "per_second": round(seen / seconds)}


# PostgreSQL references -------------------------------------------------------------------------------


REFERENCE_RUNS = 3  # each PostgreSQL reference is run this many times; its best run is the limit


def best_of(rows: int, runs: list[float]) -> dict[str, Any]:
    best = min(runs)
    return {
        "rows": rows,
        "seconds": round(best, 3),
        "per_second": round(rows / best),
        "runs_per_second": [round(rows / seconds) for seconds in runs],
    }


async def copy_reference(database: str, rows: list[Row]) -> dict[str, Any]:
    """(b) COPY of the final rows into a fresh table shaped as imports (its keys and indexes)."""
    conn = await asyncpg.connect(database)
    runs = []
    try:
        for _ in range(REFERENCE_RUNS):
            await conn.execute(
                "DROP TABLE IF EXISTS copy_imports; CREATE TABLE copy_imports (LIKE imports INCLUDING ALL)"
            )
            started = time.perf_counter()
            await conn.copy_records_to_table("copy_imports", records=rows, columns=IMPORT_COLUMNS)
            runs.append(time.perf_counter() - started)
            await conn.execute("DROP TABLE copy_imports")
    finally:
        await conn.close()
    return best_of(len(rows), runs)


_STAGING_UPSERT = """
INSERT INTO staged_imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
SELECT DISTINCT ON (user_id, resource_id, course_id)
       user_id, resource_id, course_id, course_name, version_id, version_number, imported_at
FROM staging
ORDER BY user_id, resource_id, course_id, imported_at DESC, version_number DESC, version_id DESC, course_name DESC
ON CONFLICT (user_id, resource_id, course_id) DO UPDATE SET
    course_name = EXCLUDED.course_name, version_id = EXCLUDED.version_id,
    version_number = EXCLUDED.version_number, imported_at = EXCLUDED.imported_at
WHERE (staged_imports.imported_at, staged_imports.version_number, staged_imports.version_id,
       staged_imports.course_name)
    < (EXCLUDED.imported_at, EXCLUDED.version_number, EXCLUDED.version_id, EXCLUDED.course_name)
"""


async def copy_staging_reference(database: str, rows: list[Row]) -> dict[str, Any]:
    """(c) COPY of every event's row into a temporary table, then one upsert into an imports-shaped
    table, in one transaction."""
    conn = await asyncpg.connect(database)
    runs = []
    try:
        await conn.execute("CREATE TEMP TABLE staging (LIKE imports INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        for _ in range(REFERENCE_RUNS):
            await conn.execute(
                "DROP TABLE IF EXISTS staged_imports; CREATE TABLE staged_imports (LIKE imports INCLUDING ALL)"
            )
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table("staging", records=rows, columns=IMPORT_COLUMNS)
                await conn.execute(_STAGING_UPSERT)
            runs.append(time.perf_counter() - started)
            await conn.execute("DROP TABLE staged_imports")
    finally:
        await conn.close()
    return best_of(len(rows), runs)
