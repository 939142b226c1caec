"""Partition offsets kept in PostgreSQL, in the same transaction as the rows their records
produced, and the fencing that keeps a member from committing to a partition it lost.

A member claims a partition by bumping its `generation` in `consumer_offsets`; a batch commits
only while its member still holds the generation under which it was fetched, and only if it
continues from the stored offset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from aiokafka import TopicPartition
import asyncpg

from consumers.decoding import Decoded
from core.db import Connection
from core.ingest import Applied, apply_events


class Fenced(Exception):
    """The partition now belongs to another member (or another generation of this one), or the
    batch does not continue from the stored offset."""


# What PostgreSQL may still refuse in a validated event (a value out of a column's range, say).
UNAPPLICABLE = (asyncpg.DataError, asyncpg.ProgramLimitExceededError, asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class Committed(Applied):
    by_type: dict[str, int]
    refused: list[Decoded]


async def claim_partitions(
    conn: Connection, group: str, member: str, partitions: list[TopicPartition]
) -> list[asyncpg.Record]:
    """Make `member` the owner of these partitions under a new generation, which fences every
    earlier owner; returns each partition's stored next offset, failure run and new generation."""
    return await conn.fetch(
        """
        INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, owner, generation)
        SELECT $1, topic, partition, NULL, $2, 1
        FROM jsonb_to_recordset($3::jsonb) AS p(topic text, partition integer)
        ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
            owner = EXCLUDED.owner, generation = consumer_offsets.generation + 1
        RETURNING topic, partition, next_offset, consecutive_failures, generation
        """,
        group,
        member,
        [{"topic": p.topic, "partition": p.partition} for p in partitions],
    )


async def stored_offset(pool: asyncpg.Pool, group: str, partition: TopicPartition) -> int | None:
    """The partition's next offset to apply (None: from its beginning)."""
    offset: int | None = await pool.fetchval(
        "SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
        group,
        partition.topic,
        partition.partition,
    )
    return offset


async def restart_from_beginning(
    pool: asyncpg.Pool, group: str, member: str, generation: int, partition: TopicPartition
) -> None:
    """Forget the partition's offset, while `member` still holds it under `generation`."""
    await pool.execute(
        """
        UPDATE consumer_offsets SET next_offset = NULL
        WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND owner = $4 AND generation = $5
        """,
        group,
        partition.topic,
        partition.partition,
        member,
        generation,
    )


async def commit_partition_batch(
    conn: Connection,
    group: str,
    member: str,
    generation: int,
    partition: TopicPartition,
    decoded: list[Decoded],
    next_offset: int,
    failures: int = 0,
    *,
    one_by_one: bool = False,
) -> Committed:
    """Inside the caller's transaction: apply the events and store the partition's next offset.

    Refused (Fenced) unless `member` still holds the partition under `generation` (the generation
    it held when the records were fetched) and the batch continues from the stored offset. The
    offset row is locked first, so a new owner's claim waits for this commit, or this commit sees
    the claim. `one_by_one` applies each event under a savepoint and returns those PostgreSQL
    refused, to be dead-lettered.
    """
    stored = await conn.fetchrow(
        """
        SELECT next_offset FROM consumer_offsets
        WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND owner = $4 AND generation = $5
        FOR UPDATE
        """,
        group,
        partition.topic,
        partition.partition,
        member,
        generation,
    )
    if stored is None:
        raise Fenced("the partition belongs to another member now")
    start = stored["next_offset"]  # records before it were applied already (NULL: none were)
    if start is not None and decoded[0].record.offset > start:
        raise Fenced(f"the batch starts at {decoded[0].record.offset}, after the stored offset {start}")
    fresh = [
        (d.record, d.event) for d in decoded if d.event is not None and (start is None or d.record.offset >= start)
    ]
    refused: list[Decoded] = []
    if not one_by_one:
        applied = await apply_events(conn, [event for _, event in fresh])
    else:
        applied = Applied(events=0, fanned_out_rows=0)
        for record, event in fresh:
            try:
                async with conn.transaction():
                    one = await apply_events(conn, [event])
            except UNAPPLICABLE as exc:
                refused.append(Decoded(record, failure=f"refused by the database: {exc}"))
                continue
            applied = Applied(applied.events + one.events, applied.fanned_out_rows + one.fanned_out_rows)
    await conn.execute(
        """
        UPDATE consumer_offsets SET next_offset = greatest(next_offset, $4), consecutive_failures = $5
        WHERE consumer_group = $1 AND topic = $2 AND partition = $3
        """,
        group,
        partition.topic,
        partition.partition,
        next_offset,
        failures,
    )
    refused_offsets = {d.record.offset for d in refused}
    by_type: Counter[str] = Counter(
        [event.type for record, event in fresh if not refused or record.offset not in refused_offsets]
    )
    return Committed(applied.events, applied.fanned_out_rows, dict(by_type), refused)
