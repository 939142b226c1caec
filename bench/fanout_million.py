"""Fan-out of a resource imported by 1,000,000 users (DESIGN §6: "1,000,000 importers: measured").

    .venv/bin/python -m bench.fanout_million [--importers 1000000] [--other 2] [--runs 3] [--keep-template]

Once, set-based, in a template database: `importers` users, 20,000 resources at version 2, `other`
imports of them per user (at version 1) and their available updates, and `r-fanout` at version 1
imported by every user. Each run copies it, CHECKPOINTs, starts a broker (6 partitions), the
consumer and the API, produces version 2 of `r-fanout` and, 0.2 s later, a resource on the same
partition (`neighbour`) and one on another (`elsewhere`): seconds to the last importer's API answer,
to the commit and to each other resource; the consumer's transaction and its waits (pg_stat_activity
every 20 ms) and batches; WAL (the window's, the transaction's by pg_walinspect); temporary bytes.
Then bytes per row of the tables, and the WAL of `resource.imported` batches applied by core.ingest.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import ExitStack
from datetime import timedelta
import json
import statistics
import time
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
import asyncpg

from bench import fanout, harness, machine, search_plans, streams
from core import db, sessions, updates
from core.events import EVENT_ADAPTER
from core.ingest import apply_events
from devtools.tansu import tansu_broker

TEMPLATE = "bench_fanout_million_template"
RUN = "bench_fanout_million_run"
RESOURCE = fanout.RESOURCE
RESOURCES = 20_000
NAMES = (search_plans.FIRST_NAMES, search_plans.LAST_NAMES, search_plans.RARE_LAST_NAME)

OTHER_IMPORTS = """
INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
SELECT 'u-' || u, 'r' || r, 'c-' || u || '-' || k, 'Course ' || k || ' of teacher ' || u, 'r' || r || '-v1', 1,
       timestamptz '2025-09-01' + ((u * 31 + k * 17) % 100000) * interval '1 minute'
FROM generate_series(1, $1::int) AS u, generate_series(0, $2::int - 1) AS k,
     LATERAL (SELECT (u * 31 + k * 7919) % $3::int AS r) AS drawn
"""
LISTING = """
INSERT INTO imported_resources (user_id, resource_id, last_imported_at)
SELECT user_id, resource_id, max(imported_at) FROM imports GROUP BY user_id, resource_id
"""


def partition_of(key: str, partitions: int = streams.PARTITIONS) -> int:
    """The partition Kafka's default partitioner (murmur2, as aiokafka's and Java's) gives a key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


async def build_template(importers: int, other: int) -> dict[str, float]:
    """The data set, in TEMPLATE; seconds of each step."""
    steps: dict[str, float] = {}
    url = await streams.migrated_database(TEMPLATE)
    pool = await db.create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            for name, query, args in (
                ("users", search_plans.INSERT_USERS, ("u", importers, *NAMES)),
                ("resources", None, ()),
                ("other imports", OTHER_IMPORTS, (importers, other, RESOURCES)),
                ("other updates (the refresh)", None, ()),
                ("fan-out imports", fanout.IMPORTERS, (importers, RESOURCE, "u")),
                ("imports listing", LISTING, ()),
                ("vacuum analyze", "VACUUM ANALYZE", ()),
            ):
                started = time.perf_counter()
                if query:
                    await conn.execute(query, *args)
                elif name == "resources":  # and version 1 of the fanned-out one, through the consumer's code
                    await streams.seed_resources(url, RESOURCES, version=2)
                    async with conn.transaction():
                        await apply_events(conn, [EVENT_ADAPTER.validate_python(fanout.version_event(1))])
                else:
                    async with conn.transaction():
                        await updates.refresh(conn, resources=[f"r{n}" for n in range(RESOURCES)])
                    await conn.execute("TRUNCATE update_changes")  # pruned after the retention window anyway
                steps[name] = round(time.perf_counter() - started, 1)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    finally:
        await pool.close()
    return steps


async def snapshot(pool: asyncpg.Pool, http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """WAL position, temporary bytes, checkpoints, the consumer's batch-duration histogram."""
    row = await pool.fetchrow(
        "SELECT pg_current_wal_lsn()::text AS lsn, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal, "
        "(SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database())::float8 AS temp, "
        "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)::float8 AS checkpoints"
    )
    figures: dict[str, Any] = dict(row or {})
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(prefix := "commons_users_consumer_batch_duration_seconds_"):
                name, value = line.rsplit(" ", 1)
                figures["batches_" + name.removeprefix(prefix)] = float(value)
    return figures


async def sample_transactions(pool: asyncpg.Pool, seen: dict[Any, dict[str, Any]], stop: asyncio.Event) -> None:
    """Every 20 ms, the open transactions of the database's other sessions, and what they wait for."""
    while not stop.is_set():
        for row in await pool.fetch(
            "SELECT pid, extract(epoch FROM xact_start)::float8 AS start, coalesce(wait_event_type || ':' || "
            "wait_event, 'CPU') AS wait FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND backend_type = 'client backend'"
        ):
            entry = seen.setdefault((row["pid"], row["start"]), {"start": row["start"], "waits": {}})
            entry["waits"][row["wait"]] = entry["waits"].get(row["wait"], 0) + 1
        await asyncio.sleep(0.02)


def key_on(name: str, same: bool) -> str:
    """A resource id whose partition is (or is not) that of RESOURCE."""
    return next(k for n in range(1000) if (partition_of(k := f"{name}-{n}") == partition_of(RESOURCE)) == same)


async def send(producer: AIOKafkaProducer, topic: str, resource: str, version: int) -> float:
    """Publish a version of a resource, keyed by its id; returns when it was sent (epoch seconds)."""
    at = time.time()
    await producer.send_and_wait(topic, json.dumps(fanout.version_event(version, resource)).encode(), resource.encode())
    return at


async def one_run(importers: int) -> dict[str, Any]:
    await harness.drop_database(RUN)
    await harness._admin(f'CREATE DATABASE "{RUN}" TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY')
    url, last = harness.database_url(RUN), f"u-{importers}"
    path = f"/api/users/{last}/updates/{RESOURCE}"
    neighbour, elsewhere = key_on("r-neighbour", True), key_on("r-elsewhere", False)
    topics, port = streams.Topics.fresh("bench-million"), harness.free_port()
    pool = await db.create_pool(url, min_size=3, max_size=4)
    try:
        session_id = await sessions.open_session(pool, last, 3600)
        with ExitStack() as stack:
            bootstrap = stack.enter_context(tansu_broker())
            await streams.create_topics(bootstrap, topics.resource, topics.user)
            consumer = stack.enter_context(
                streams.consumer_process(url, bootstrap, topics, CONSUMER_HEALTH_PORT=str(port))
            )
            base = stack.enter_context(harness.service_api(harness.ROOT / ".venv/bin/python", url))
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await producer.start()
            async with aiohttp.ClientSession() as http, pool.acquire() as slot:
                while (await streams.applied(pool, topics))[0] < streams.PARTITIONS:  # type: ignore[arg-type]
                    if consumer.poll() is not None:
                        raise RuntimeError("the consumer exited: see .bench/last.log")
                    await asyncio.sleep(0.2)  # until the consumer claimed (and positioned) every partition
                await pool.execute("CHECKPOINT")
                # A temporary slot keeps the run's WAL for pg_walinspect, until this connection closes.
                await slot.execute("SELECT pg_create_physical_replication_slot('bench_fanout_million', true, true)")
                seen: dict[Any, dict[str, Any]] = {}
                before, stop = await snapshot(pool, http, port), asyncio.Event()
                sampler = asyncio.create_task(sample_transactions(pool, seen, stop))
                produced = await send(producer, topics.resource, RESOURCE, 2)
                await asyncio.sleep(0.2)
                others = {name: await send(producer, topics.resource, name, 1) for name in (neighbour, elsewhere)}
                visible: dict[str, float] = {}
                while len(visible) < 3:
                    now = time.time()
                    if "last" not in visible and await fanout.visible(http, base + path, session_id, f"{RESOURCE}-v2"):
                        visible["last"] = now - produced
                    for name, at in others.items():
                        if name not in visible and await pool.fetchval("SELECT 1 FROM resources WHERE id = $1", name):
                            visible[name] = now - at
                    await asyncio.sleep(0.02)
                stop.set()
                await sampler
                await asyncio.sleep(1.5)  # the backends' statistics are flushed within a second
                after = await snapshot(pool, http, port)
                xid = await pool.fetchval(
                    "SELECT changed_by::text FROM available_updates WHERE resource_id = $1 LIMIT 1", RESOURCE
                )
                wal = await pool.fetchrow(WAL_BY_XID, before["lsn"], after["lsn"], str(int(xid) & 0xFFFFFFFF))
                await slot.execute("SELECT pg_drop_replication_slot('bench_fanout_million')")
            await producer.stop()
        committed = await pool.fetchval(
            "SELECT extract(epoch FROM max(changed_at))::float8 FROM update_changes WHERE resource_id = $1", RESOURCE
        )
        tx = max(seen.values(), key=lambda t: committed - t["start"] if t["start"] < committed else 0)
        d = {k: v - before.get(k, 0) for k, v in after.items() if k != "lsn"}
        assert wal is not None
        return {
            "rows": await pool.fetchval("SELECT count(*) FROM available_updates WHERE resource_id = $1", RESOURCE),
            "last_importer_visible_s": round(visible["last"], 2),
            "committed_s": round(committed - produced, 2),
            "transaction_started_s": round(tx["start"] - produced, 2),
            "transaction_s": round(committed - tx["start"], 2),
            "neighbour_visible_s": round(visible[neighbour], 2),
            "elsewhere_visible_s": round(visible[elsewhere], 2),
            "consumer_batches": d.get("batches_count", 0),
            "consumer_batch_seconds": round(d.get("batches_sum", 0), 2),
            "wal_bytes_window": int(d["wal"]),
            "wal_bytes_transaction": int(wal["bytes"]),
            "wal_fpi_bytes_transaction": int(wal["fpi"]),
            "wal_records_transaction": int(wal["records"]),
            "temp_bytes": int(d["temp"]),
            "checkpoints": int(d["checkpoints"]),
            "transaction_waits": tx["waits"],
        }
    finally:
        await pool.close()


WAL_BY_XID = (  # the WAL records of a transaction: their number, bytes, and bytes of full-page images
    "SELECT count(*) AS records, coalesce(sum(record_length), 0) AS bytes, coalesce(sum(fpi_length), 0) AS fpi "
    "FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn) WHERE xid::text = $3"
)


async def sizes(url: str) -> dict[str, dict[str, float]]:
    """Rows of each table, its size (pg_total_relation_size), and bytes a row: in all, in indexes."""
    conn = await asyncpg.connect(url)
    try:
        result = {}
        for t in ("users", "resources", "imports", "imported_resources", "available_updates", "update_changes"):
            query = f"SELECT count(*), pg_total_relation_size('{t}'), pg_indexes_size('{t}') FROM {t}"
            rows, total, indexes = await conn.fetchrow(query)  # type: ignore[misc]
            per = max(rows, 1)
            result[t] = {"rows": rows, "mib": round(total / 2**20), "bytes_per_row": round(total / per)}
            result[t]["index_bytes_per_row"] = round(indexes / per)
        return result
    finally:
        await conn.close()


async def ingest_wal(url: str, importers: int, compression: str, first: int, size: int = 2500) -> dict[str, float]:
    """WAL (pg_walinspect) and PostgreSQL time an event of 4 `resource.imported` batches applied by
    core.ingest after a CHECKPOINT, a transaction each, with `wal_compression`: new courses of random
    importers, half of them at version 1 of a resource at version 2 (a new available update)."""
    pool = await db.create_pool(url, min_size=1, max_size=1)
    xids, seconds = [], 0.0
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"SET wal_compression = {compression}; CHECKPOINT")
            start_lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            for n0 in range(first, first + 4 * size, size):
                events = []
                for n in range(n0, n0 + size):
                    e = streams.imported_event(n, n * 7919 % RESOURCES, 9, 1 + n % 2, streams.T0 + timedelta(seconds=n))
                    e["userId"] = user = f"u-{1 + n * 104729 % importers}"
                    e["courseId"] = f"c-{user}-new-{n}"
                    events.append(EVENT_ADAPTER.validate_python(e))
                started = time.perf_counter()
                async with conn.transaction():
                    await apply_events(conn, events)
                    xids.append(await conn.fetchval("SELECT (pg_current_xact_id()::text::bigint & 4294967295)::text"))
                seconds += time.perf_counter() - started
            end_lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            wal = await conn.fetchrow(WAL_BY_XID.replace("= $3", "= ANY($3::text[])"), start_lsn, end_lsn, xids)
    finally:
        await pool.close()
    assert wal is not None
    per_event = {"wal_bytes": wal["bytes"], "of_which_full_page_images": wal["fpi"], "us": seconds * 1e6}
    return {k: round(v / (4 * size)) for k, v in per_event.items()}


def spread(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """[min, median, max] of each figure over the runs."""
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float) and k != "rows"]
    return {k: [f(r[k] for r in runs) for f in (min, statistics.median, max)] for k in keys}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": await machine.machine(), "importers": args.importers, "other": args.other}
    if not (args.keep_template and await harness.database_exists(TEMPLATE)):
        result["setup_seconds"] = await build_template(args.importers, args.other)
    try:
        result["runs"] = [await one_run(args.importers) for _ in range(args.runs)]
        result["spread"] = spread(result["runs"])
        result["sizes"] = await sizes(url := harness.database_url(RUN))
        ingest = {c: await ingest_wal(url, args.importers, c, n * 10_000) for n, c in enumerate(("off", "lz4"))}
        result["ingest_per_event_by_wal_compression"] = ingest
    finally:
        await harness.drop_database(RUN)
        if not args.keep_template:
            await harness.drop_database(TEMPLATE)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--importers", type=int, default=1_000_000)
    parser.add_argument("--other", type=int, default=2, help="other resources each importer imported")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-template", action="store_true", help="keep (and reuse) the template database")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2, default=str))
