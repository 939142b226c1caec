"""The consumer-group member that applies resource and user events to PostgreSQL: the loop, and
what it does when partitions change hands.

Each partition's records are applied in order, in batches, each batch with the partition's next
offset in one transaction (consumers/offsets.py). `run` is a pipeline (consumers/pipeline.py);
`run_once` is one turn without it: fetch, then apply each partition's batch in turn.

On assignment the member claims the partitions and seeks to their stored offsets; a revocation
waits for the batches being applied (consumers/ownership.py). Offsets are also committed to Kafka
after the database commit, only so that lag tooling sees the group's progress.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
import logging
import os
import secrets
import socket
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
import asyncpg

from consumers import metrics, offsets
from consumers.closing import stop_consumer
from consumers.decoding import DeadLetterFailed, DeadLetters, Decoded, decode
from consumers.ownership import Ownership
from consumers.pipeline import Batch, ConsumerHalted, Pipeline
from consumers.topics import ensure_topics, event_topics, partition_name, topic_types
from core import db
from core.settings import Settings

log = logging.getLogger(__name__)

_DATABASE_RETRY_SECONDS = 1


class EventConsumer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, member: str | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.member = member or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._group = settings.kafka_consumer_group
        # For the liveness probe: when the loop last turned or the oldest batch applied started.
        self.last_turn = time.monotonic()
        self._halt: ConsumerHalted | None = None
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=self._group,
            # Every partition is positioned explicitly (consumers/ownership.py), and fetch() catches a stored
            # position past the end of a partition before any of its records is applied.
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        )
        self._applying_since: dict[TopicPartition, float] = {}  # the batches being applied
        self._dead_letters = DeadLetters(
            settings.kafka_bootstrap_servers, settings.consumer_dead_letter_timeout_seconds
        )
        self._topic_types = topic_types(settings)
        self.ownership = Ownership(self._kafka, pool, self._group, self.member, self.halt)
        self._pipeline = Pipeline(  # the steps looked up at each call: a wrapper set on the consumer counts
            settings,
            self._topic_types,
            fetch=lambda *args, **kwargs: self.fetch(*args, **kwargs),
            apply=lambda batch: self.apply(batch),
            applied=lambda partition, next_offset: self._commit_to_kafka(partition, next_offset),
            assigned=lambda: self._kafka.assignment(),
            halted=lambda: self._halt,
        )

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self.ownership.partitions)

    @property
    def joined(self) -> bool:
        return self.ownership.joined

    async def start(self) -> None:
        if self.settings.kafka_create_topics:
            await ensure_topics(self.settings)
        await self._dead_letters.start()
        self._kafka.subscribe(event_topics(self.settings), listener=self.ownership)
        await self._kafka.start()
        topics = ", ".join(event_topics(self.settings))
        log.info("consumer %s joined group %s for %s", self.member, self._group, topics)

    async def stop(self) -> None:
        """Leave the group, once the batches being applied are committed (run() returns only then)."""
        try:
            await self._pipeline.drain()
            await stop_consumer(self._kafka)
        finally:  # also when leaving failed: the producer is closed, never left to the collector
            await self._dead_letters.stop()
        log.info("consumer %s left the group", self.member)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until `stopping` is set, then return once the batches being applied are
        committed. Raises ConsumerHalted when the consumer halts, and whatever else a batch raised."""
        self._pipeline.start()
        try:
            while not stopping.is_set():
                self._pipeline.raise_if_failed()
                await self._pipeline.turn()
                self.last_turn = min([time.monotonic(), *self._applying_since.values()])
        finally:
            await self._pipeline.drain()
        self._pipeline.raise_if_failed()

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet applied, per assigned partition whose end is known."""
        lags = {}
        for partition, owned in self.ownership.partitions.items():
            end = self._kafka.highwater(partition)
            if end is not None:
                lags[partition] = max(end - owned.next_offset, 0)
        return lags

    async def run_once(self, timeout_ms: int = 1000) -> int:
        """Fetch one batch, apply each partition's records in one transaction with its offset, and
        return the number of records consumed: one turn of the loop, without the pipeline."""
        return await self.consume(await self.fetch(timeout_ms))

    async def fetch(
        self, timeout_ms: int, partitions: Iterable[TopicPartition] = (), *, max_records: int | None = None
    ) -> list[Batch]:
        """Records of these partitions (all assigned ones by default), per partition: at most
        `max_records` (CONSUMER_MAX_BATCH by default) in all."""
        self._raise_if_halted()
        try:
            fetched = await self._kafka.getmany(
                *partitions, timeout_ms=timeout_ms, max_records=max_records or self.settings.consumer_max_batch
            )
        except Exception as exc:  # not a record's fault (a corrupt batch, say): nothing of it can be applied
            held = sorted(self.ownership.partitions.items())
            positions = ", ".join(f"{partition_name(p)} from offset {o.next_offset}" for p, o in held)
            raise self.halt(
                f"the fetch failed ({type(exc).__name__}: {exc}); nothing was applied past {positions}. Stopping "
                'rather than skipping: see README, "The consumer", for what an operator can do.'
            ) from exc
        self._raise_if_halted()
        # A stored position past the end of its partition is answered by Kafka with a reset to the
        # beginning, by some brokers with nothing: compare it with the end the fetch reported.
        policy = self.settings.consumer_offset_beyond_end
        for partition, owned in list(self.ownership.partitions.items()):
            end, stored = self._kafka.highwater(partition), owned.unchecked_offset
            if end is not None and stored is not None:
                owned.unchecked_offset = None
                if stored > end:
                    await self.ownership.offset_beyond_end(partition, stored, end, policy)
                    fetched.pop(partition, None)  # replayed from the beginning by the next fetch
        for partition, lag in self.lag().items():
            metrics.PARTITION_LAG.labels(partition.topic, str(partition.partition)).set(lag)
        return [
            Batch(partition, self.ownership.generation(partition), records)
            for partition, records in fetched.items()
            if records
        ]

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
        one transaction. Returns that offset, or None when the batch was refused (fenced) or is to be
        read again (the database was out of reach)."""
        partition, first = batch.partition, batch.records[0].offset
        started = time.perf_counter()
        self._applying_since[partition] = time.monotonic()
        try:
            return await self._apply(batch, partition, first, started)
        finally:
            self._applying_since.pop(partition, None)

    async def _apply(self, batch: Batch, partition: TopicPartition, first: int, started: float) -> int | None:
        unreachable: BaseException | None = None
        async with self.ownership.applying():  # a rebalance waits until the batch in hand is committed
            owned = self.ownership.partitions.get(partition)
            if owned is None or owned.generation != batch.generation:
                metrics.FENCED_BATCHES.inc()
                return None  # fetched before a rebalance: the new position reads it again
            if owned.positioned and first > owned.next_offset:
                # Fetched before a seek back (to read a batch again): seeking again is harmless, and
                # makes sure that what it skips is read.
                where, expected = partition_name(partition), owned.next_offset
                log.debug("%s: batch at offset %d dropped, %d is next", where, first, expected)
                self._kafka.seek(partition, owned.next_offset)
                return None
            if batch.decoded is None:
                types = self._topic_types.get(partition.topic, frozenset())
                decoded = [decode(record, types) for record in batch.records]
            else:
                decoded = batch.decoded
            failures = self._count_failures(partition, owned.failures, decoded)
            next_offset: int = batch.records[-1].offset + 1
            try:
                await self._dead_letters.send([d for d in decoded if d.failure is not None])
                committed = await self._commit(batch, decoded, next_offset, failures)
            except DeadLetterFailed as exc:
                raise self.halt(
                    f"{partition_name(partition)}: a dead letter of the batch at offset {first} "
                    f"could not be written ({exc}); stopping before its offset is stored."
                ) from exc
            except offsets.Fenced as exc:
                where = partition_name(partition)
                log.warning(
                    "%s: batch at offset %d refused (%s); the partition's owner reads it again", where, first, exc
                )
                metrics.FENCED_BATCHES.inc()
                if partition in self.ownership.partitions:
                    await self._rewind(partition)
                return None
            except Exception as exc:
                if not db.out_of_reach(exc):
                    raise
                # Applying it again is safe even if the commit went through: the stored offset says so.
                self._kafka.seek(partition, first)
                if not owned.positioned:  # the partition's next batch must start there now
                    owned.next_offset, owned.positioned = first, True
                unreachable = exc
            else:
                owned.failures, owned.next_offset, owned.positioned = failures, next_offset, True
        if unreachable is not None:
            message = "%s: the database is out of reach (%r); the batch at offset %d is read again in %s s"
            log.warning(message, partition_name(partition), unreachable, first, _DATABASE_RETRY_SECONDS)
            metrics.DATABASE_RETRIES.inc()
            await asyncio.sleep(_DATABASE_RETRY_SECONDS)
            return None
        skipped = sum(d.unknown_type is not None for d in decoded)
        metrics.observe_batch(time.perf_counter() - started, skipped, committed.by_type, committed.fanned_out_rows)
        return next_offset

    async def _commit(self, batch: Batch, decoded: list[Decoded], next_offset: int, failures: int) -> offsets.Committed:
        args = (self._group, self.member, batch.generation, batch.partition, decoded, next_offset, failures)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                return await offsets.commit_partition_batch(conn, *args)
        except offsets.UNAPPLICABLE as exc:
            # Some value passed validation but not PostgreSQL: find the events at fault, one by one.
            where, first = partition_name(batch.partition), batch.records[0].offset
            log.warning("%s: batch at offset %d failed (%s); applying its events one by one", where, first, exc)
        async with self.pool.acquire() as conn, conn.transaction():
            committed = await offsets.commit_partition_batch(conn, *args, one_by_one=True)
            await self._dead_letters.send(committed.refused)  # before the commit: never lost
            return committed

    async def _rewind(self, partition: TopicPartition) -> None:
        """Seek back to the stored offset, so that a refused batch is read again."""
        stored = await offsets.stored_offset(self.pool, self._group, partition)
        if stored is None:
            await self._kafka.seek_to_beginning(partition)
        else:
            self._kafka.seek(partition, stored)
        if (owned := self.ownership.partitions.get(partition)) is not None:
            owned.next_offset, owned.positioned = stored or 0, stored is not None

    def _count_failures(self, partition: TopicPartition, run: int, decoded: list[Decoded]) -> int:
        """The partition's run of consecutive failures after this batch; halts before anything is
        written when it reaches the limit (a bad deploy upstream must not dead-letter the stream).
        The run is stored with the offset, so a restart does not reset it."""
        limit = self.settings.consumer_max_consecutive_failures
        for d in decoded:
            run = run + 1 if d.failure is not None else 0
            if run >= limit:
                raise self.halt(
                    f"{run} consecutive messages failed to decode, the last at {partition_name(partition)} offset "
                    f"{d.record.offset} ({d.failure}); stopping instead of dead-lettering them. Fix the "
                    f"publisher, or raise CONSUMER_MAX_CONSECUTIVE_FAILURES, then restart."
                )
        return run

    async def _commit_to_kafka(self, partition: TopicPartition, next_offset: int) -> None:
        try:
            await self._kafka.commit({partition: next_offset})
        except KafkaError as exc:  # only lag tooling reads it; PostgreSQL holds the truth
            log.info("%s: offset %d not committed to Kafka (%s)", partition_name(partition), next_offset, exc)

    def halt(self, reason: str) -> ConsumerHalted:
        """Stop for good: this turn and every later one raise ConsumerHalted(reason)."""
        self._halt = ConsumerHalted(reason)
        log.error("%s", reason)
        return self._halt
