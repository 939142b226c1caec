"""The partitions this member owns, and how far each is applied.

On assignment a partition is claimed in PostgreSQL under a new generation (consumers/offsets.py)
and the consumer seeks to its stored offset; on revocation it is given up. Batches of different
partitions are applied at once, each `applying()`; a change of ownership is `changing()`, which
waits until no batch is being applied and keeps new ones waiting until it is done, so a partition
never changes hands mid-batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
from dataclasses import dataclass
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
import asyncpg

from consumers import metrics, offsets
from consumers.topics import partition_name

log = logging.getLogger(__name__)


@dataclass
class Owned:
    """An owned partition: the generation it was claimed under, its run of consecutive dead
    letters (stored with the offset), and the next offset to apply."""

    generation: int
    failures: int
    next_offset: int
    # The stored offset, until the first fetch tells the partition's end to compare it with.
    unchecked_offset: int | None = None
    # Whether the next batch must start at next_offset (else no offset was stored yet: any will do).
    positioned: bool = True


class Ownership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's listener is untyped
    def __init__(
        self,
        kafka: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        group: str,
        member: str,
        halt: Callable[[str], Exception],
    ) -> None:
        self._kafka, self._pool, self._group, self._member, self._halt = kafka, pool, group, member, halt
        self.partitions: dict[TopicPartition, Owned] = {}
        self.joined = False
        self._turn = asyncio.Condition()
        self._applying = 0  # batches being applied
        self._changing = False  # a change of ownership is waiting or under way

    @contextlib.asynccontextmanager
    async def applying(self) -> AsyncIterator[None]:
        """Around the application of one batch: batches of different partitions may be applied at
        once; none starts while ownership changes."""
        async with self._turn:
            await self._turn.wait_for(lambda: not self._changing)
            self._applying += 1
        try:
            yield
        finally:
            async with self._turn:
                self._applying -= 1
                self._turn.notify_all()

    @contextlib.asynccontextmanager
    async def changing(self) -> AsyncIterator[None]:
        """Around a change of ownership: waits for the batches being applied, and holds new ones
        back (it goes before them, so that a stream of batches cannot delay a rebalance)."""
        async with self._turn:
            await self._turn.wait_for(lambda: not self._changing)
            self._changing = True
            try:
                await self._turn.wait_for(lambda: self._applying == 0)
            except BaseException:
                self._changing = False
                self._turn.notify_all()
                raise
        try:
            yield
        finally:
            async with self._turn:
                self._changing = False
                self._turn.notify_all()

    def generation(self, partition: TopicPartition) -> int:
        owned = self.partitions.get(partition)
        return owned.generation if owned is not None else -1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.changing():
            self.joined = True
            if not assigned:
                return
            try:
                await self._claim(sorted(assigned))
            except Exception as exc:  # aiokafka would only log it, leaving the partitions unread
                self._halt(f"could not take ownership of {sorted(assigned)}: {exc!r}")

    async def _claim(self, partitions: list[TopicPartition]) -> None:
        async with self._pool.acquire() as conn:
            rows = await offsets.claim_partitions(conn, self._group, self._member, partitions)
        unread = []
        for row in rows:
            partition, stored = TopicPartition(row["topic"], row["partition"]), row["next_offset"]
            self.partitions[partition] = Owned(
                row["generation"], row["consecutive_failures"], stored or 0, stored, positioned=stored is not None
            )
            if stored is None:
                unread.append(partition)
            else:
                self._kafka.seek(partition, stored)
        if unread:
            await self._kafka.seek_to_beginning(*unread)
        log.info("consumer %s owns %s", self._member, ", ".join(map(partition_name, partitions)))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.changing():
            for partition in revoked:
                self.partitions.pop(partition, None)
                with contextlib.suppress(KeyError):  # no lag was reported for it yet
                    metrics.PARTITION_LAG.remove(partition.topic, str(partition.partition))

    async def offset_beyond_end(self, partition: TopicPartition, stored: int, end: int, policy: str) -> None:
        """A stored offset past the partition's end (a wiped or recreated topic): `policy`
        (CONSUMER_OFFSET_BEYOND_END) decides, loudly."""
        message = (
            f"{partition_name(partition)}: the stored offset {stored} is beyond the end of the partition "
            f"({end}); was the topic wiped or recreated?"
        )
        if policy == "fail":
            raise self._halt(
                message + " Stopping (CONSUMER_OFFSET_BEYOND_END=fail). To read the partition again from its "
                "start, set CONSUMER_OFFSET_BEYOND_END=replay."
            )
        log.error("%s Replaying it from its beginning (CONSUMER_OFFSET_BEYOND_END=replay).", message)
        async with self.changing():
            generation = self.generation(partition)
            await offsets.restart_from_beginning(self._pool, self._group, self._member, generation, partition)
            await self._kafka.seek_to_beginning(partition)
            if (owned := self.partitions.get(partition)) is not None:
                owned.next_offset, owned.positioned = 0, False
