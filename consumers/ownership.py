"""The partitions this member owns, and how far each is applied.

On assignment a partition is claimed in PostgreSQL under a new generation (consumers/offsets.py)
and the consumer seeks to its stored offset; on revocation it is given up. Both wait for `lock`,
which the consumer holds while it applies a batch, so a partition never changes hands mid-batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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


class Ownership(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's listener is untyped
    def __init__(
        self,
        kafka: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        group: str,
        member: str,
        halt: Callable[[str], object],
    ) -> None:
        self._kafka, self._pool, self._group, self._member, self._halt = kafka, pool, group, member, halt
        self.lock = asyncio.Lock()
        self.partitions: dict[TopicPartition, Owned] = {}
        self.joined = False

    def generation(self, partition: TopicPartition) -> int:
        owned = self.partitions.get(partition)
        return owned.generation if owned is not None else -1

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
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
        for row in rows:
            partition, stored = TopicPartition(row["topic"], row["partition"]), row["next_offset"]
            self.partitions[partition] = Owned(row["generation"], row["consecutive_failures"], stored or 0, stored)
            if stored is None:
                await self._kafka.seek_to_beginning(partition)
            else:
                self._kafka.seek(partition, stored)
        log.info("consumer %s owns %s", self._member, ", ".join(map(partition_name, partitions)))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            for partition in revoked:
                self.partitions.pop(partition, None)
                with contextlib.suppress(KeyError):  # no lag was reported for it yet
                    metrics.PARTITION_LAG.remove(partition.topic, str(partition.partition))
