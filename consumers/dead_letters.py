"""The dead-letter topics read back and replayed (`commons-users dlq`, README: "Dead letters").

The reader joins no group: it assigns itself the partitions of the dead-letter topics and reads
each only up to the end it had when the reader opened. A record that fails again while a replay
runs is dead-lettered after that end, so the run that replayed it does not replay it again: no loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
import enum
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from consumers.closing import stop_consumer
from consumers.topics import DLQ_SUFFIX, dead_letter_topic

# How long the broker may leave the command without an answer (to start, to a fetch, to the acks of
# a batch of replayed records) before it gives up.
TIMEOUT_SECONDS = 30.0
# What stops a command that talks to the broker: it could not run (exit status 2). The client
# reports a refused or lost connection as a KafkaError.
BROKER_ERRORS = (KafkaError, TimeoutError)
# The header of a replayed record: the dead letter it came from. The consumer reads no header.
REPLAYED_FROM = "replayed-from"

_FETCH_MS = 500
_BATCH = 500


@dataclass(frozen=True)
class DeadLetter:
    """A record of a dead-letter topic, with the headers the consumer gave it
    (consumers/decoding.py)."""

    topic: str
    partition: int
    offset: int
    time: datetime  # when it was dead-lettered
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
        headers = tuple((name, value or b"") for name, value in record.headers)
        time = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        return cls(record.topic, record.partition, record.offset, time, record.key, record.value, headers)

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[-1].decode(errors="replace") if values else None

    @property
    def address(self) -> str:
        """Where the dead letter itself is: `<topic>.dlq/<partition>/<offset>`."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def source_topic(self) -> str:
        return self.topic.removesuffix(DLQ_SUFFIX)

    @property
    def source_partition(self) -> str:
        return self.header("source-partition") or "?"

    @property
    def source_offset(self) -> str:
        return self.header("source-offset") or "?"

    @property
    def source(self) -> str:
        """Where the record was read from: `<topic>/<partition>/<offset>`, the dead letter's name."""
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    @property
    def reason(self) -> str:
        return self.header("error") or ""

    @property
    def size(self) -> int:
        """Bytes of the value the record had at its source (a stub has none of them)."""
        size = self.header("source-size") or ""
        return int(size) if size.isdigit() else len(self.value or b"")

    @property
    def stub(self) -> bool:
        """The record was too large to copy: it has no value, and is read at its source offset."""
        return self.header("stub") is not None


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command takes: dead-lettered at or after `since` and before `until`,
    with `reason` in their error (in any case)."""

    since: datetime | None = None
    until: datetime | None = None
    reason: str | None = None

    def match(self, letter: DeadLetter) -> bool:
        return (
            (self.since is None or letter.time >= self.since)
            and (self.until is None or letter.time < self.until)
            and (self.reason is None or self.reason.casefold() in letter.reason.casefold())
        )


class DeadLetterReader:
    """The dead letters of these event topics, topic by topic, partition by partition, in offset
    order, from `since` (found with the broker's offsets for times) up to the end offsets taken when
    the reader opens."""

    def __init__(self, bootstrap_servers: str, topics: Iterable[str], since: datetime | None = None) -> None:
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self._topics = [dead_letter_topic(topic) for topic in topics]
        self._since = since
        self._ranges: dict[TopicPartition, tuple[int, int]] = {}
        self.missing: list[str] = []  # dead-letter topics the broker does not have

    @property
    def total(self) -> int:
        """Records the reader reads in all (whether filters take them or not)."""
        return sum(end - start for start, end in self._ranges.values())

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await self._kafka.start()
                await self._position()
        except BaseException:
            await stop_consumer(self._kafka)
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await stop_consumer(self._kafka)

    async def _position(self) -> None:
        existing = await self._kafka.topics()  # all topics: asking for one by name may create it
        self.missing = [topic for topic in self._topics if topic not in existing]
        partitions = [
            TopicPartition(topic, number)
            for topic in self._topics
            if topic in existing
            for number in sorted(self._kafka.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return
        self._kafka.assign(partitions)
        starts = await self._kafka.beginning_offsets(partitions)
        listed = await self._kafka.end_offsets(partitions)
        ends = {
            partition: await self._log_end(partition, starts[partition], listed[partition]) for partition in partitions
        }
        if self._since is not None:
            since_ms = max(int(self._since.timestamp() * 1000), 0)  # Kafka takes no time before 1970
            for partition, found in (await self._kafka.offsets_for_times(dict.fromkeys(partitions, since_ms))).items():
                # No record that late: Kafka answers None, Tansu an offset with the timestamp -1.
                late = found is not None and found.timestamp >= since_ms
                starts[partition] = max(found.offset, starts[partition]) if late else ends[partition]
        for partition in partitions:
            self._ranges[partition] = (starts[partition], ends[partition])
            self._kafka.seek(partition, starts[partition])

    async def _log_end(self, partition: TopicPartition, start: int, listed: int) -> int:
        """The partition's end offset, as the high watermark of a fetch of its last listed record:
        Tansu lists the offset after the first record of the last batch, which may hold more."""
        if listed <= start:
            return listed
        self._kafka.seek(partition, listed - 1)
        await self._fetch(partition, listed)
        end: int = self._kafka.highwater(partition)
        return end

    async def batches(self) -> AsyncIterator[list[DeadLetter]]:
        for partition, (_, end) in self._ranges.items():
            while await self._kafka.position(partition) < end:
                records = await self._fetch(partition, end)
                yield [DeadLetter.of(record) for record in records if record.offset < end]

    async def _fetch(self, partition: TopicPartition, end: int) -> list[ConsumerRecord[bytes, bytes]]:
        """The partition's next records; TimeoutError when none comes in time."""
        async with asyncio.timeout(TIMEOUT_SECONDS):
            while await self._kafka.position(partition) < end:
                fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = await self._kafka.getmany(
                    partition, timeout_ms=_FETCH_MS, max_records=_BATCH
                )
                if records := fetched.get(partition):
                    return records
        return []  # what was left before the end holds no record (a transaction marker, say)


class Republisher:
    """Publishes dead letters to their source topics with their key and value as they came, and a
    `replayed-from` header; it waits for the acks of all replicas."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")

    async def __aenter__(self) -> Self:
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                await self._producer.start()
        except BaseException:
            await self._producer.stop()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def publish(self, letters: list[DeadLetter]) -> None:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            deliveries = [
                await self._producer.send(
                    letter.source_topic,
                    letter.value,
                    key=letter.key,
                    headers=[(REPLAYED_FROM, letter.address.encode())],
                )
                for letter in letters
            ]
            for delivery in deliveries:
                await delivery


class Action(enum.Enum):
    REPLAYED = "replayed"  # published again (with no republisher: would be)
    STUB = "stub"  # taken by the filters, but it has no value to publish
    LEFT = "left"  # not taken by the filters


async def replay(
    reader: DeadLetterReader, republisher: Republisher | None, filters: Filters
) -> AsyncIterator[tuple[DeadLetter, Action]]:
    """Each dead letter the reader reads and what was done with it, a batch at a time; without a
    republisher (a dry run) nothing is published."""
    async for batch in reader.batches():
        actions = [
            (letter, Action.LEFT if not filters.match(letter) else Action.STUB if letter.stub else Action.REPLAYED)
            for letter in batch
        ]
        if republisher is not None:
            await republisher.publish([letter for letter, action in actions if action is Action.REPLAYED])
        for outcome in actions:
            yield outcome
