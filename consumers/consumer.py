"""The consumer-group member that applies resource and user events to PostgreSQL.

Exactly-once effects come from storing each partition's next offset in PostgreSQL, in the same
transaction as the rows its records produced, and seeking to it whenever the partition is
assigned. A member claims a partition by bumping its `generation`; a batch commits only while its
member still holds the generation it claimed, so a member whose partition was revoked cannot
commit after the new owner started. Offsets are also committed to Kafka after the database
commit, only so that lag tooling sees the group's progress.
"""

from __future__ import annotations

import asyncio
from collections import Counter
import contextlib
from dataclasses import dataclass
import logging
import os
import secrets
import socket
import time

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from consumers.topics import dead_letter_topic, ensure_topics, event_topics
from service import ingest, jsontext, observability
from service.events import EVENT_ADAPTER, KNOWN_TYPES, SUPPORTED_SCHEMA_VERSIONS, Envelope, Event, partition_key
from service.settings import Settings

log = logging.getLogger(__name__)


class ConsumerHalted(RuntimeError):
    """The consumer must stop; the message says why and what an operator can do."""


class Fenced(Exception):
    """The partition now belongs to another member (or another generation of this one), or the
    batch does not continue from the stored offset."""


@dataclass(frozen=True)
class Batch:
    """Records of one partition, fetched while this member held it under `generation`."""

    partition: TopicPartition
    generation: int
    records: list[ConsumerRecord]


@dataclass(frozen=True)
class Decoded:
    """One record, parsed: an event to apply, a type to skip, or a failure to dead-letter."""

    record: ConsumerRecord
    event: Event | None = None
    unknown_type: str | None = None
    failure: str | None = None


def decode(record: ConsumerRecord) -> Decoded:
    try:
        document = jsontext.loads(record.value) if record.value is not None else None
    except ValueError as exc:
        return Decoded(record, failure=f"invalid JSON: {exc}")
    if not isinstance(document, dict):
        return Decoded(record, failure="the value is not a JSON object")
    try:
        envelope = Envelope.model_validate(document)
        if envelope.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            return Decoded(record, failure=f"unsupported schemaVersion {envelope.schema_version}")
        if envelope.type not in KNOWN_TYPES:
            return Decoded(record, unknown_type=envelope.type)
        event = EVENT_ADAPTER.validate_python(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        return Decoded(record, failure=f"schema: {problems}")
    key = partition_key(event)
    if record.key is None or record.key.decode(errors="replace") != key:
        return Decoded(record, failure=f"the message key must be {key!r}, the id the event is about")
    return Decoded(record, event=event)


class EventConsumer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, member: str | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.counts: Counter[str] = Counter()
        self._generations: dict[TopicPartition, int] = {}
        # Consecutive dead letters per partition, as stored with its offset.
        self._failures: dict[TopicPartition, int] = {}
        # Stored offsets not yet compared with the partition's end (known from the first fetch).
        self._unchecked: dict[TopicPartition, int] = {}
        self._batch_lock = asyncio.Lock()  # a rebalance waits for the batch in hand
        # For the probes: when the loop last turned, whether the group was joined, how far each
        # partition is applied.
        self.last_turn = time.monotonic()
        self.joined = False
        self._applied_to: dict[TopicPartition, int] = {}
        self._halt: ConsumerHalted | None = None
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=settings.kafka_consumer_group,
            # Every partition is positioned explicitly (see claim), and fetch() catches a stored
            # position past the end of a partition before any of its records is applied.
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
        )
        self._dead_letters = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._generations)

    async def start(self) -> None:
        if self.settings.kafka_create_topics:
            await ensure_topics(self.settings)
        await self._dead_letters.start()
        self._kafka.subscribe(event_topics(self.settings), listener=_Ownership(self))
        await self._kafka.start()
        log.info("consumer %s joined group %s for %s", self.member, self.settings.kafka_consumer_group,
                 ", ".join(event_topics(self.settings)))

    async def stop(self) -> None:
        """Leave the group. Call between batches (as run() does): the batch in hand is never cut."""
        await self._kafka.stop()
        await self._dead_letters.stop()
        log.info("consumer %s left the group", self.member)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.run_once(timeout_ms=500)
            self.last_turn = time.monotonic()

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet applied, per assigned partition whose end is known."""
        lags = {}
        for partition in self._generations:
            end = self._kafka.highwater(partition)
            if end is not None:
                lags[partition] = max(end - self._applied_to.get(partition, 0), 0)
        return lags

    async def run_once(self, timeout_ms: int = 1000) -> int:
        """Fetch one batch, apply each partition's records in one transaction with its offset, and
        return the number of records consumed."""
        return await self.consume(await self.fetch(timeout_ms))

    async def fetch(self, timeout_ms: int) -> list[Batch]:
        self._raise_if_halted()
        fetched = await self._kafka.getmany(timeout_ms=timeout_ms, max_records=self.settings.consumer_max_batch)
        self._raise_if_halted()
        # A stored position past the end of its partition is answered by Kafka with a reset to the
        # beginning, by some brokers with nothing at all: compare it with the end the fetch reported.
        for partition, stored in list(self._unchecked.items()):
            end = self._kafka.highwater(partition)
            if end is not None:
                del self._unchecked[partition]
                if stored > end:
                    await self._offset_beyond_end(partition, stored, end)
                    fetched.pop(partition, None)  # replayed from the beginning by the next fetch
        for partition, lag in self.lag().items():
            observability.PARTITION_LAG.labels(partition.topic, str(partition.partition)).set(lag)
        return [Batch(partition, self._generations.get(partition, -1), records)
                for partition, records in fetched.items() if records]

    async def consume(self, batches: list[Batch]) -> int:
        consumed = 0
        for batch in batches:
            next_offset = await self.apply(batch)
            if next_offset is not None:
                await self._commit_to_kafka(batch.partition, next_offset)
                consumed += len(batch.records)
        return consumed

    def _raise_if_halted(self) -> None:
        if self._halt is not None:
            raise self._halt

    async def apply(self, batch: Batch) -> int | None:
        """Dead-letter what does not decode, then apply the rest with the partition's new offset in
        one transaction. Returns that offset, or None when the batch was refused (fenced)."""
        partition = batch.partition
        started = time.perf_counter()
        async with self._batch_lock:  # a rebalance waits until the batch in hand is committed
            if self._generations.get(partition) != batch.generation:
                self._count_fenced()
                return None  # fetched before a rebalance: the new position reads it again
            decoded = [decode(record) for record in batch.records]
            failures = self._count_failures(partition, decoded)
            await self._dead_letter([d for d in decoded if d.failure is not None])
            next_offset = batch.records[-1].offset + 1
            try:
                applied = await self._commit(batch, decoded, next_offset, failures)
            except Fenced as exc:
                log.warning("%s: batch at offset %d refused (%s); it will be read again by the partition's owner",
                            _name(partition), batch.records[0].offset, exc)
                self._count_fenced()
                if partition in self._generations:
                    await self._rewind(partition)
                return None
            self._failures[partition] = failures
            self._applied_to[partition] = next_offset
        observability.BATCH_DURATION.observe(time.perf_counter() - started)
        for d in decoded:
            if d.unknown_type is not None:
                self.counts[f"skipped:{d.unknown_type}"] += 1
                observability.EVENTS_SKIPPED.labels(d.unknown_type).inc()
        for event_type, count in applied.by_type.items():
            observability.EVENTS_APPLIED.labels(event_type).inc(count)
        self.counts["applied"] += applied.events
        self.counts["fanned_out_rows"] += applied.fanned_out_rows
        observability.FANNED_OUT_ROWS.inc(applied.fanned_out_rows)
        return next_offset

    def _count_fenced(self) -> None:
        self.counts["fenced_batches"] += 1
        observability.FENCED_BATCHES.inc()

    async def _commit(self, batch: Batch, decoded: list[Decoded], next_offset: int, failures: int) -> Committed:
        args = (self.settings.kafka_consumer_group, self.member, batch.generation, batch.partition, decoded,
                next_offset, failures)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await commit_partition_batch(conn, *args)
        except UNAPPLICABLE as exc:
            # Some value passed validation but not PostgreSQL: find the events at fault, one by one.
            log.warning("%s: batch at offset %d failed (%s); applying its events one by one",
                        _name(batch.partition), batch.records[0].offset, exc)
        async with self.pool.acquire() as conn, conn.transaction():
            committed = await commit_partition_batch(conn, *args, one_by_one=True)
            await self._dead_letter(committed.refused)  # before the commit: never lost
            return committed

    async def _rewind(self, partition: TopicPartition) -> None:
        """Seek back to the stored offset, so that a refused batch is read again."""
        stored = await self.pool.fetchval(
            "SELECT next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            self.settings.kafka_consumer_group, partition.topic, partition.partition,
        )
        if stored is None:
            await self._kafka.seek_to_beginning(partition)
        else:
            self._kafka.seek(partition, stored)

    def _count_failures(self, partition: TopicPartition, decoded: list[Decoded]) -> int:
        """The partition's run of consecutive failures after this batch; halts before anything is
        written when it reaches the limit (a bad deploy upstream must not dead-letter the stream).
        The run is stored with the offset, so a restart does not reset it."""
        run = self._failures.get(partition, 0)
        limit = self.settings.consumer_max_consecutive_failures
        for d in decoded:
            run = run + 1 if d.failure is not None else 0
            if run >= limit:
                self._halt = ConsumerHalted(
                    f"{run} consecutive messages failed to decode, the last at {_name(partition)} offset "
                    f"{d.record.offset} ({d.failure}); stopping instead of dead-lettering them. Fix the "
                    f"publisher, or raise CONSUMER_MAX_CONSECUTIVE_FAILURES, then restart."
                )
                raise self._halt
        return run

    async def _dead_letter(self, failures: list[Decoded]) -> None:
        """Send each failed record to `<topic>.dlq`, its reason in the headers, and wait for the acks
        (before its offset is committed: a dead letter may be sent twice, never lost)."""
        sends = []
        for failure in failures:
            record = failure.record
            headers = [
                ("error", (failure.failure or "").encode()),
                ("source-topic", record.topic.encode()),
                ("source-partition", str(record.partition).encode()),
                ("source-offset", str(record.offset).encode()),
            ]
            sends.append(await self._dead_letters.send(
                dead_letter_topic(record.topic), record.value, key=record.key, headers=headers))
            log.warning("dead-lettered %s offset %d: %s", _name(TopicPartition(record.topic, record.partition)),
                        record.offset, failure.failure)
        for sent in sends:
            await sent
        self.counts["dead_lettered"] += len(failures)
        for failure in failures:
            observability.DEAD_LETTERED.labels(failure.record.topic).inc()

    async def _commit_to_kafka(self, partition: TopicPartition, next_offset: int) -> None:
        try:
            await self._kafka.commit({partition: next_offset})
        except KafkaError as exc:  # only lag tooling reads it; PostgreSQL holds the truth
            log.info("%s: offset %d not committed to Kafka (%s)", _name(partition), next_offset, exc)

    async def claim(self, partitions: set[TopicPartition]) -> None:
        """Take ownership of newly assigned partitions and seek each to its stored offset."""
        self.joined = True
        if not partitions:
            return
        ordered = sorted(partitions)
        async with self.pool.acquire() as conn:
            rows = await claim_partitions(conn, self.settings.kafka_consumer_group, self.member, ordered)
        for row in rows:
            partition = TopicPartition(row["topic"], row["partition"])
            self._generations[partition] = row["generation"]
            self._failures[partition] = row["consecutive_failures"]
            self._applied_to[partition] = row["next_offset"] or 0
            if row["next_offset"] is None:
                await self._kafka.seek_to_beginning(partition)
            else:
                self._kafka.seek(partition, row["next_offset"])
                self._unchecked[partition] = row["next_offset"]
        log.info("consumer %s owns %s", self.member, ", ".join(map(_name, ordered)))

    async def _offset_beyond_end(self, partition: TopicPartition, stored: int, end: int) -> None:
        """A stored offset past the partition's end (a wiped or recreated topic): the configured
        policy decides, loudly."""
        message = (f"{_name(partition)}: the stored offset {stored} is beyond the end of the partition "
                   f"({end}); was the topic wiped or recreated?")
        if self.settings.consumer_offset_beyond_end == "fail":
            self._halt = ConsumerHalted(message + " Stopping (CONSUMER_OFFSET_BEYOND_END=fail). To read the "
                                        "partition again from its start, set CONSUMER_OFFSET_BEYOND_END=replay.")
            log.error("%s", self._halt)
            raise self._halt
        log.error("%s Replaying it from its beginning (CONSUMER_OFFSET_BEYOND_END=replay).", message)
        async with self._batch_lock:
            await self.pool.execute(
                """
                UPDATE consumer_offsets SET next_offset = NULL
                WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND owner = $4 AND generation = $5
                """,
                self.settings.kafka_consumer_group, partition.topic, partition.partition, self.member,
                self._generations.get(partition, -1),
            )
            await self._kafka.seek_to_beginning(partition)

    def release(self, partitions: set[TopicPartition]) -> None:
        for partition in partitions:
            self._generations.pop(partition, None)
            self._failures.pop(partition, None)
            self._unchecked.pop(partition, None)
            self._applied_to.pop(partition, None)
            with contextlib.suppress(KeyError):  # no lag was reported for it yet
                observability.PARTITION_LAG.remove(partition.topic, str(partition.partition))

    def halt(self, reason: str) -> None:
        self._halt = ConsumerHalted(reason)
        log.error("%s", reason)


# What PostgreSQL may still refuse in a validated event (a value out of a column's range, say).
UNAPPLICABLE = (asyncpg.DataError, asyncpg.ProgramLimitExceededError, asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class Committed(ingest.Applied):
    by_type: dict[str, int]
    refused: list[Decoded]


async def commit_partition_batch(
    conn: asyncpg.Connection, group: str, member: str, generation: int, partition: TopicPartition,
    decoded: list[Decoded], next_offset: int, failures: int = 0, *, one_by_one: bool = False,
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
        group, partition.topic, partition.partition, member, generation,
    )
    if stored is None:
        raise Fenced("the partition belongs to another member now")
    start = stored["next_offset"]  # records before it were applied already (NULL: none were)
    if start is not None and decoded[0].record.offset > start:
        raise Fenced(f"the batch starts at {decoded[0].record.offset}, after the stored offset {start}")
    fresh = [d for d in decoded if d.event is not None and (start is None or d.record.offset >= start)]
    refused: list[Decoded] = []
    if not one_by_one:
        applied = await ingest.apply_events(conn, [d.event for d in fresh])
    else:
        applied = ingest.Applied(events=0, fanned_out_rows=0)
        for d in fresh:
            try:
                async with conn.transaction():
                    one = await ingest.apply_events(conn, [d.event])
            except UNAPPLICABLE as exc:
                refused.append(Decoded(d.record, failure=f"refused by the database: {exc}"))
                continue
            applied = ingest.Applied(applied.events + one.events, applied.fanned_out_rows + one.fanned_out_rows)
    await conn.execute(
        """
        UPDATE consumer_offsets SET next_offset = greatest(next_offset, $4), consecutive_failures = $5
        WHERE consumer_group = $1 AND topic = $2 AND partition = $3
        """,
        group, partition.topic, partition.partition, next_offset, failures,
    )
    refused_offsets = {d.record.offset for d in refused}
    by_type = Counter(d.event.type for d in fresh if d.record.offset not in refused_offsets)
    return Committed(applied.events, applied.fanned_out_rows, dict(by_type), refused)


async def claim_partitions(conn: asyncpg.Connection, group: str, member: str,
                           partitions: list[TopicPartition]) -> list[asyncpg.Record]:
    """Make `member` the owner of these partitions under a new generation, which fences every
    earlier owner; returns each partition's stored next offset, failure run and new generation."""
    return await conn.fetch(
        """
        INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, owner, generation)
        SELECT $1, topic, partition, NULL, $4, 1 FROM unnest($2::text[], $3::int[]) AS p(topic, partition)
        ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
            owner = EXCLUDED.owner, generation = consumer_offsets.generation + 1
        RETURNING topic, partition, next_offset, consecutive_failures, generation
        """,
        group, [p.topic for p in partitions], [p.partition for p in partitions], member,
    )


class _Ownership(ConsumerRebalanceListener):
    def __init__(self, consumer: EventConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._consumer._batch_lock:  # the batch in hand commits first
            self._consumer.release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._consumer._batch_lock:
            try:
                await self._consumer.claim(set(assigned))
            except Exception as exc:  # aiokafka would only log it, leaving the partitions unread
                self._consumer.halt(f"could not take ownership of {sorted(assigned)}: {exc!r}")


def _name(partition: TopicPartition) -> str:
    return f"{partition.topic}[{partition.partition}]"
