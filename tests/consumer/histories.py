"""Histories of resource events for the consumer's tests, streamed to the broker, and the tables
compared with the reference model (tests/model.py) once they are applied."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
import json
import random
import uuid

from aiokafka import AIOKafkaProducer
import asyncpg

from core.settings import Settings
from tests.model import EventDocument, Model, available_updates

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def history(count: int, seed: int) -> list[EventDocument]:
    """`count` resource events about 20 resources, 50 users and 3 courses each, some delivered twice."""
    rng = random.Random(seed)
    versions: dict[str, int] = {}
    events: list[EventDocument] = []
    for n in range(count):
        resource, at = f"r{rng.randrange(20)}", (T0 + timedelta(seconds=n)).isoformat()
        envelope = {"eventId": str(uuid.UUID(int=rng.getrandbits(128))), "occurredAt": at, "schemaVersion": 1}
        roll = rng.random()
        if events and roll < 0.03:  # a redelivery
            events.append(rng.choice(events))
            continue
        if roll < 0.18:
            version = versions[resource] = versions.get(resource, 0) + 1
            resource_document = {
                "title": f"{resource} v{version}", "type": "quiz", "account": {"id": "a", "name": "A"},
                "createDate": T0.isoformat(), "updateDate": at,
            }  # fmt: skip
            events.append({
                **envelope, "type": "resource.version.published", "resourceId": resource,
                "versionId": f"{resource}-v{version}", "versionNumber": version, "publishedAt": at,
                "resource": resource_document,
            })  # fmt: skip
        elif roll < 0.995:
            version = rng.randint(1, max(versions.get(resource, 1), 1))
            events.append({
                **envelope, "type": "resource.imported", "resourceId": resource, "userId": f"u{rng.randrange(50)}",
                "courseId": f"c{rng.randrange(3)}", "courseName": "Course", "versionId": f"{resource}-v{version}",
                "versionNumber": version, "importedAt": at,
            })  # fmt: skip
        else:
            events.append({**envelope, "type": "resource.deleted", "resourceId": resource, "deletedAt": at})
    return events


async def stream(settings: Settings, events: list[EventDocument], per_second: float) -> None:
    """Publish the events in order, keyed by resource, at about `per_second`."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        chunk = max(int(per_second / 10), 1)
        for start in range(0, len(events), chunk):
            sent = [
                await producer.send(settings.kafka_resource_topic, json.dumps(e).encode(), key=e["resourceId"].encode())
                for e in events[start : start + chunk]
            ]
            await asyncio.gather(*sent)
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()


async def applied_records(pool: asyncpg.Pool, settings: Settings) -> int:
    """How many records of the resource topic the group applied (its stored offsets, summed)."""
    return await pool.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
        settings.kafka_consumer_group,
        settings.kafka_resource_topic,
    )


async def caught_up(pool: asyncpg.Pool, settings: Settings, records: int, seconds: float = 120) -> None:
    async with asyncio.timeout(seconds):
        while await applied_records(pool, settings) != records:
            await asyncio.sleep(0.2)


async def assert_tables_match(pool: asyncpg.Pool, events: list[EventDocument]) -> None:
    model = Model()
    model.add(events)
    assert await available_updates(pool) == model.available_updates()
    latest = {resource: e["versionNumber"] for resource, e in model.latest_versions().items()}
    rows = await pool.fetch("SELECT id, version_number FROM resources")
    assert {row["id"]: row["version_number"] for row in rows} == latest
    assert await pool.fetchval("SELECT count(*) FROM imports") == len(model.held())
