"""The events of the ingest benchmarks (bench/ingest.py, freshness.py, memory.py) and what they
share: `resource.imported` events of a realistic shape, the topics, producing them, the resources
they refer to, and the consumer process under test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
import json
import random
import secrets
import subprocess
import sys
import time
from typing import Any
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
import asyncpg

from bench.harness import (
    create_database,
    free_port,
    process,
    service_env,
)
from core import db

T0 = datetime(2026, 1, 1, tzinfo=UTC)
USERS = 20_000
RESOURCES = 20_000
COURSES_PER_USER = 3
PARTITIONS = 6
IMPORT_COLUMNS = ["user_id", "resource_id", "course_id", "course_name", "version_id", "version_number", "imported_at"]
Row = tuple[str, str, str, str, str, int, datetime]


# The data set --------------------------------------------------------------------------------------


def imported_event(user: int, resource: int, course: int, version: int, at: datetime) -> dict[str, Any]:
    """A `resource.imported` event document, as a publisher sends it (README "Events")."""
    return {
        "eventId": str(uuid.uuid4()),
        "type": "resource.imported",
        "occurredAt": at.isoformat(),
        "schemaVersion": 1,
        "resourceId": f"r{resource}",
        "userId": f"u{user}",
        "courseId": f"c-{user}-{course}",
        "courseName": f"Course {course} of teacher {user}",
        "versionId": f"r{resource}-v{version}",
        "versionNumber": version,
        "importedAt": at.isoformat(),
    }


def published_event(resource: int, version: int, at: datetime) -> dict[str, Any]:
    """A `resource.version.published` event document."""
    return {
        "eventId": str(uuid.uuid4()),
        "type": "resource.version.published",
        "occurredAt": at.isoformat(),
        "schemaVersion": 1,
        "resourceId": f"r{resource}",
        "versionId": f"r{resource}-v{version}",
        "versionNumber": version,
        "versionNotes": f"Version {version}: corrected answers and a new exercise.",
        "publishedAt": at.isoformat(),
        "resource": {
            "title": f"Resource {resource}: fractions, decimals and percentages",
            "description": "Practice sets and a short quiz for the unit on fractions.",
            "type": "course",
            "account": {"id": f"acct-{resource % 7}", "name": f"District {resource % 7}"},
            "authors": [{"id": f"author-{resource % 97}", "name": f"Author {resource % 97}"}],
            "tags": ["math", "fractions"],
            "thumbnail": {"url": f"https://cdn.example.edu/t/{resource}.png", "description": "Cover"},
            "createDate": T0.isoformat(),
            "updateDate": at.isoformat(),
        },
    }


def import_events(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """`count` imports: distinct (user, resource, course) keys, teachers taking turns, then 2 % of
    them again, later and at another version (the latest import of a key wins)."""
    rng = random.Random(seed)
    repeats = count // 50
    events = []
    for n in range(count - repeats):
        user, round_ = n % USERS, n // USERS
        resource = (user * 31 + round_ * 7919) % RESOURCES  # distinct for a user while rounds < RESOURCES
        events.append(
            imported_event(user, resource, round_ % COURSES_PER_USER, rng.randint(1, 2), T0 + timedelta(seconds=n))
        )
    for n in range(repeats):
        first = events[rng.randrange(len(events))]
        user = int(first["userId"][1:])
        resource, course = int(first["resourceId"][1:]), int(first["courseId"].rsplit("-", 1)[1])
        events.append(imported_event(user, resource, course, 2, T0 + timedelta(days=30, seconds=n)))
    return events


def final_rows(events: Sequence[dict[str, Any]]) -> list[Row]:
    """The row each (user, resource, course) ends with: its latest import."""
    rows: dict[tuple[str, str, str], Row] = {}
    for e in events:
        row = event_row(e)
        key = row[:3]
        if key not in rows or (row[6], row[5], row[4], row[3]) > (
            rows[key][6],
            rows[key][5],
            rows[key][4],
            rows[key][3],
        ):
            rows[key] = row
    return list(rows.values())


def event_row(e: dict[str, Any]) -> Row:
    return (
        e["userId"],
        e["resourceId"],
        e["courseId"],
        e["courseName"],
        e["versionId"],
        e["versionNumber"],
        datetime.fromisoformat(e["importedAt"]),
    )


# The broker ----------------------------------------------------------------------------------------


async def create_topics(bootstrap: str, *topics: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1) for topic in topics])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, events: Iterable[dict[str, Any]], key_field: str = "resourceId") -> float:
    """Publish the documents keyed by `key_field` (a generator is read as it goes, never held whole);
    waits for every ack; returns the seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=512 * 1024, acks="all")
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for e in events:
            pending.append(await producer.send(topic, json.dumps(e).encode(), key=e[key_field].encode()))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


# The service -----------------------------------------------------------------------------------------


async def seed_resources(database: str, resources: int = RESOURCES, version: int = 2) -> None:
    """Publish the resources (versions 1 to `version`) through the consumer's own code."""
    from core.events import EVENT_ADAPTER
    from core.ingest import apply_events

    conn = await asyncpg.connect(database)
    try:
        await conn.set_type_codec("jsonb", encoder=db.encode_jsonb, decoder=json.loads, schema="pg_catalog")
        for start in range(0, resources, 2000):
            events = [
                EVENT_ADAPTER.validate_python(published_event(r, v, T0 - timedelta(days=10 - v)))
                for r in range(start, min(start + 2000, resources))
                for v in range(1, version + 1)
            ]
            async with conn.transaction():
                await apply_events(conn, events)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def migrated_database(name: str) -> str:
    url = await create_database(name)
    await asyncio.to_thread(db.migrate, url)
    return url


@dataclass(frozen=True)
class Topics:
    resource: str
    user: str
    group: str

    @classmethod
    def fresh(cls, prefix: str) -> Topics:
        suffix = secrets.token_hex(4)
        return cls(f"{prefix}-resource-{suffix}", f"{prefix}-user-{suffix}", f"{prefix}-group-{suffix}")


def consumer_env(database: str, bootstrap: str, topics: Topics, **extra: str) -> dict[str, str]:
    """The consumer's settings: the service's defaults, this run's broker, topics and group, and
    `extra` (which wins)."""
    return service_env(
        database,
        **{
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_RESOURCE_TOPIC": topics.resource,
            "KAFKA_USER_TOPIC": topics.user,
            "KAFKA_CONSUMER_GROUP": topics.group,
            "KAFKA_CREATE_TOPICS": "true",
            "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
            "CONSUMER_HEALTH_PORT": str(free_port()),
            "LOG_LEVEL": "WARNING",
            **extra,
        },
    )


@contextlib.contextmanager
def consumer_process(database: str, bootstrap: str, topics: Topics, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`commons-users consumer` (python -m service consumer), stopped with SIGTERM at the end."""
    with process(
        [sys.executable, "-m", "service", "consumer"], consumer_env(database, bootstrap, topics, **extra)
    ) as proc:
        yield proc


async def applied(conn: asyncpg.Connection, topics: Topics) -> tuple[int, int]:
    """(partitions claimed, records applied) of the group on the resource topic."""
    row = await conn.fetchrow(
        "SELECT count(*) AS claimed, coalesce(sum(next_offset), 0) AS applied FROM consumer_offsets "
        "WHERE consumer_group = $1 AND topic = $2",
        topics.group,
        topics.resource,
    )
    assert row is not None
    return int(row["claimed"]), int(row["applied"])
