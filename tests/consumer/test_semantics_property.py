"""The rule of available updates (README: "Updates and ignores") as a property: whatever the
delivery order, duplication and batching of a history of events, and wherever ignores fall in it,
the tables equal a pure-Python model of the definition (tests/model.py).

Events go through the consumer's own path from record bytes to committed rows: decode, then
commit_partition_batch (offset guard, set-based apply, offset store). Ignores go through the
service's ignore_update, as the endpoint calls it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import json
import uuid

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.decoding import decode
from consumers.offsets import claim_partitions, commit_partition_batch
from core import updates
from core.errors import InvalidInput, NotFound
from core.events import KNOWN_TYPES
from tests.model import EventDocument, Model, available_updates

T0 = datetime(2026, 1, 1, tzinfo=UTC)
USERS, RESOURCES, COURSES = ("u1", "u2"), ("r1", "r2"), ("c1", "c2")
PARTITION = TopicPartition("property-events", 0)


def when(minutes: int) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def event_id(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


publications = st.builds(
    lambda r, v, n, t: {
        "type": "resource.version.published",
        "resourceId": r,
        "versionId": f"{r}-v{v}-{n}",
        "versionNumber": v,
        "versionNotes": f"notes {n}",
        "publishedAt": when(t),
        "eventId": event_id(n),
        "resource": {
            "title": f"{r} v{v} ({n})",
            "type": "quiz",
            "account": {"id": "a", "name": "A"},
            "createDate": when(0),
            "updateDate": when(t),
        },
    },
    st.sampled_from(RESOURCES),
    st.integers(1, 3),
    st.integers(0, 10**6),
    st.integers(0, 5),
)
imports = st.builds(
    lambda u, r, c, v, t, name, n: {
        "type": "resource.imported",
        "resourceId": r,
        "userId": u,
        "courseId": c,
        "courseName": name,
        "versionId": f"{r}-v{v}",
        "versionNumber": v,
        "importedAt": when(t),
        "eventId": event_id(n),
    },
    st.sampled_from(USERS),
    st.sampled_from(RESOURCES),
    st.sampled_from(COURSES),
    st.integers(1, 3),
    st.integers(0, 3),
    st.sampled_from(["Course A", "Course B"]),
    st.integers(0, 10**6),
)
deletions = st.builds(
    lambda r, t, n: {"type": "resource.deleted", "resourceId": r, "deletedAt": when(t), "eventId": event_id(n)},
    st.sampled_from(RESOURCES),
    st.integers(0, 5),
    st.integers(0, 10**6),
)
# Deletions are rare: each one ends its resource's story.
events = (
    st.sampled_from([publications] * 3 + [imports] * 5 + [deletions])
    .flatmap(lambda kind: kind)
    .map(lambda e: {**e, "occurredAt": when(0), "schemaVersion": 1})
)
ignores = st.tuples(
    st.sampled_from(USERS),
    st.sampled_from(RESOURCES),
    st.one_of(st.none(), st.lists(st.sampled_from(COURSES), max_size=2)),
)


@st.composite
def histories(draw):
    """Distinct events, delivered in a random order, some of them again, in random batches, with
    ignores at random points between batches."""
    distinct = draw(st.lists(events, min_size=1, max_size=16, unique_by=lambda e: e["eventId"]))
    redelivered = draw(st.lists(st.sampled_from(distinct), max_size=6))
    deliveries = draw(st.permutations(distinct + redelivered))
    steps, position = [], 0
    while position < len(deliveries):
        size = draw(st.integers(1, 5))
        steps.append(("deliver", deliveries[position : position + size]))
        position += size
        if draw(st.booleans()):
            steps.append(("ignore", draw(ignores)))
    return steps


async def deliver(pool, batch: list[EventDocument], offset: int, generation: int) -> int:
    records = [
        ConsumerRecord(
            PARTITION.topic,
            PARTITION.partition,
            offset + n,
            0,
            0,
            e["resourceId"].encode(),
            json.dumps(e).encode(),
            None,
            0,
            0,
            (),
        )
        for n, e in enumerate(batch)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await commit_partition_batch(
            conn,
            "property",
            "member",
            generation,
            PARTITION,
            [decode(r, KNOWN_TYPES) for r in records],
            offset + len(records),
        )
    return offset + len(records)


async def ignore(pool, user: str, resource: str, courses: list[str] | None) -> str:
    try:
        await updates.ignore_update(pool, user, resource, courses)
    except NotFound:
        return "not found"
    except InvalidInput:
        return "invalid"
    return "ignored"


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=histories())
async def test_tables_match_the_definition_for_any_delivery(pool, steps):
    await pool.execute(
        "TRUNCATE available_updates, imports, favorites, resources, resource_versions, "
        "resource_deletions, "
        "consumer_offsets"
    )
    async with pool.acquire() as conn:
        generation = (await claim_partitions(conn, "property", "member", [PARTITION]))[0]["generation"]
    model, offset = Model(), 0
    for kind, payload in steps:
        if kind == "deliver":
            offset = await deliver(pool, payload, offset, generation)
            model.add(payload)
        else:
            assert await ignore(pool, *payload) == model.ignore(*payload), payload

    assert await available_updates(pool) == model.available_updates()
    for user in USERS:
        for resource in RESOURCES:
            latest = model.latest(resource)
            stored = await pool.fetchval("SELECT version_number FROM resources WHERE id = $1", resource)
            assert stored == (latest["versionNumber"] if latest else None)
            if latest:
                async with pool.acquire() as conn:
                    pending = await updates.pending_courses(conn, user, resource, stored)
                assert sorted(pending) == model.pending(user, resource)
