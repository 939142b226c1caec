"""The consumer's pipeline (consumers/consumer.py `run`): its loop fetches records and hands each
partition's to that partition's lane, decoding them while earlier batches are being applied. A
lane gathers what arrives while its batch is applied into its next batch, so batches grow with
the backlog, up to CONSUMER_MAX_BATCH records; beyond that, the partition's records stay in the
Kafka client (which fetches no more of them) until the batch is taken. Up to CONSUMER_CONCURRENCY
lanes apply a batch at once, each in a transaction of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
import contextlib
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from consumers.decoding import Decoded, decode
from core.settings import Settings

# How long one fetch of the loop waits for records. It returns as soon as some arrive; its length
# only bounds how often the loop turns (for the liveness probe and a stop) when none do.
POLL_MS = 500
# How long a fetch waits while some partition's next batch is full: about how long that partition's
# records may wait once its batch is taken.
_BUSY_POLL_MS = 10


class ConsumerHalted(RuntimeError):
    """The consumer must stop; the message says why and what an operator can do."""


@dataclass(frozen=True)
class Batch:
    """Records of one partition, fetched while this member held it under `generation`, and
    decoded, when that was done before the batch is applied."""

    partition: TopicPartition
    generation: int
    records: list[ConsumerRecord[bytes, bytes]]
    decoded: list[Decoded] | None = None


class _Lane:
    """A partition's place in the pipeline: the records fetched (and decoded) since its worker took
    its last batch, which make its next batch, and that worker, which applies its batches one after
    another."""

    def __init__(self, partition: TopicPartition) -> None:
        self.partition = partition
        self.generation = -1
        self.records: list[ConsumerRecord[bytes, bytes]] = []
        self.decoded: list[Decoded] = []
        self.worker: asyncio.Task[None] | None = None

    def gather(self, batch: Batch, decoded: list[Decoded]) -> None:
        follows = batch.generation == self.generation and (
            not self.records or batch.records[0].offset > self.records[-1].offset
        )
        if not follows:  # fetched after a seek back (to read a batch again) or a rebalance: it replaces the rest
            self.records, self.decoded = [], []
        self.generation = batch.generation
        self.records += batch.records
        self.decoded += decoded

    def take(self) -> Batch | None:
        if not self.records:
            return None
        batch = Batch(self.partition, self.generation, self.records, self.decoded)
        self.records, self.decoded = [], []
        return batch


Fetch = Callable[..., Awaitable[list[Batch]]]


class Pipeline:
    """The lanes, the batches being applied, and what ended the run. The consumer's own steps do
    the work: `fetch(timeout_ms, partitions, max_records=)`, `apply(batch)` (the partition's next
    offset, or None when nothing was stored), `applied(partition, next_offset)` once a slot is
    free again; `halted()` says whether it halted (apply raises ConsumerHalted then), and
    `assigned()` lists its partitions."""

    def __init__(
        self,
        settings: Settings,
        topic_types: dict[str, frozenset[str]],
        *,
        fetch: Fetch,
        apply: Callable[[Batch], Awaitable[int | None]],
        applied: Callable[[TopicPartition, int], Awaitable[None]],
        assigned: Callable[[], Iterable[TopicPartition]],
        halted: Callable[[], ConsumerHalted | None],
    ) -> None:
        self._settings, self._topic_types = settings, topic_types
        self._fetch, self._apply, self._applied = fetch, apply, applied
        self._assigned, self._halted = assigned, halted
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._slots = asyncio.Semaphore(settings.consumer_concurrency)
        self._draining = False
        self._failure: BaseException | None = None
        self._room = asyncio.Event()  # a lane's worker took its next batch

    def start(self) -> None:
        self._draining, self._failure = False, None

    def raise_if_failed(self) -> None:
        if (halt := self._halted()) is not None:
            raise halt
        if self._failure is not None:
            raise self._failure

    async def turn(self) -> None:
        """Fetch the records of the partitions whose next batch has room, and hand them over. The
        records of the others wait in the Kafka client (which fetches no more of them meanwhile);
        so that they are not kept waiting long once their batch is taken, the fetch is short then.
        All lanes together gather at most CONSUMER_CONCURRENCY full batches: what the records in
        hand take in memory does not grow with the number of partitions."""
        self._room.clear()
        most = self._settings.consumer_max_batch
        room = most * self._settings.consumer_concurrency - sum(len(lane.records) for lane in self._lanes.values())
        full = {p for p, lane in self._lanes.items() if len(lane.records) >= most}
        ready = [p for p in self._assigned() if p not in full] if full else []
        if room <= 0 or (full and not ready):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), POLL_MS / 1000)
            return
        if full:
            batches = await self._fetch(_BUSY_POLL_MS, ready, max_records=min(room, most))
        else:
            batches = await self._fetch(POLL_MS, max_records=min(room, most))
        for batch in batches:
            self._hand_over(batch)

    def _hand_over(self, batch: Batch) -> None:
        """Decode the records (while the lanes' batches are being applied) and add them to their
        partition's next batch; start its worker if it has none."""
        lane = self._lanes.get(batch.partition)
        if lane is None:
            lane = self._lanes[batch.partition] = _Lane(batch.partition)
        types = self._topic_types.get(batch.partition.topic, frozenset())
        lane.gather(batch, [decode(record, types) for record in batch.records])
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._work(lane))

    async def _work(self, lane: _Lane) -> None:
        """Apply the lane's batches in order, each once a slot is free, until it has none."""
        try:
            while self._halted() is None and self._failure is None and not self._draining:
                async with self._slots:
                    batch = lane.take()  # once a slot is free: what arrived meanwhile is in it
                    if batch is None:
                        return
                    self._room.set()
                    next_offset = await self._apply(batch)
                if next_offset is not None:
                    await self._applied(batch.partition, next_offset)
        except ConsumerHalted:
            pass  # the consumer holds it: the loop raises it
        except Exception as exc:  # the loop raises it, once the other lanes are done
            self._failure = exc

    async def drain(self) -> None:
        """Let each lane finish the batch it is applying; what it gathered but did not start is
        left to be read again (its offsets were not stored)."""
        self._draining = True
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        await asyncio.gather(*workers, return_exceptions=True)  # a worker keeps its failure in self._failure
        self._lanes.clear()
