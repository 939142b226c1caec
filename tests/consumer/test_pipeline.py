"""The consumer's pipeline (EventConsumer.run): partitions applied at once, each in order, batches
gathered while the previous one is applied, and the same guarantees as one batch at a time: a
partition's batches commit in offset order and only under the generation they were fetched with,
a batch read again after a failure is applied once, and a stop commits the batches in hand."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
import contextlib
import itertools
from typing import Any, cast

from aiokafka import TopicPartition
import pytest

from consumers import consumer as consumer_module
from consumers.consumer import EventConsumer
from consumers.offsets import claim_partitions
from consumers.ownership import Ownership
from consumers.pipeline import Batch, ConsumerHalted
from core.settings import Settings
from tests.consumer.histories import applied_records, assert_tables_match, history, stream
from tests.kafka import STEADY_SESSION, produce_raw
from tests.metrics import APPLIED, DEAD_LETTERED, FENCED

DATABASE_RETRIES = "commons_users_consumer_database_retries_total"


class Recorder:
    """Wraps a consumer's apply: every batch applied, its result, and how many were applied at once."""

    def __init__(self, consumer: EventConsumer) -> None:
        self.batches: list[tuple[Batch, int | None]] = []
        self.in_flight = self.most_in_flight = 0
        self._apply = consumer.apply
        consumer.apply = self.apply  # type: ignore[method-assign]

    async def apply(self, batch: Batch) -> int | None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            result = await self._apply(batch)
        finally:
            self.in_flight -= 1
        self.batches.append((batch, result))
        return result

    def committed(self) -> dict[TopicPartition, list[tuple[int, int]]]:
        """Per partition, the (first, next) offsets of the batches committed, in commit order."""
        found: dict[TopicPartition, list[tuple[int, int]]] = defaultdict(list)
        for batch, next_offset in self.batches:
            if next_offset is not None:
                found[batch.partition].append((batch.records[0].offset, next_offset))
        return found


@contextlib.asynccontextmanager
async def running(consumer: EventConsumer) -> AsyncIterator[asyncio.Task[None]]:
    """consumer.run() in a task for the block; then stopped, and its outcome raised."""
    stopping = asyncio.Event()
    task = asyncio.create_task(consumer.run(stopping))
    try:
        yield task
    finally:
        stopping.set()
        await task


async def until(condition: Callable[[], Awaitable[bool] | bool], task: asyncio.Task[None], seconds: float = 60) -> None:
    """Wait for `condition`, while the consumer runs (its failure is raised at once)."""
    async with asyncio.timeout(seconds):
        while True:
            result = condition()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            if task.done():
                task.result()
                raise AssertionError("the consumer stopped")
            await asyncio.sleep(0.05)


async def applied(pool, settings: Settings, records: int) -> bool:
    return await applied_records(pool, settings) == records


def pipeline_settings(settings: Settings, **overrides: object) -> Settings:
    # Small batches, so that batches are gathered while others are applied, and both partitions
    # compete for fewer slots than there are lanes.
    return settings.model_copy(update={"consumer_max_batch": 7, "consumer_concurrency": 1, **overrides})


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_each_partition_commits_in_order_and_the_tables_match(consumer_settings, pool, moved, concurrency):
    settings = pipeline_settings(consumer_settings, consumer_concurrency=concurrency)
    documents = history(400, seed=5)
    consumer = EventConsumer(settings, pool, member="member-1")
    recorder = Recorder(consumer)
    await consumer.start()
    try:
        async with running(consumer) as task:
            await stream(settings, documents, per_second=2_000)
            await until(lambda: applied(pool, settings, len(documents)), task)
    finally:
        await consumer.stop()

    await assert_tables_match(pool, documents)
    assert moved(APPLIED) == len(documents)  # each record once
    committed = recorder.committed()
    assert sum(next_offset for batches in committed.values() for _, next_offset in batches[-1:]) == len(documents)
    for batches in committed.values():
        for (_, previous_next), (first, _) in itertools.pairwise(batches):
            assert first == previous_next  # contiguous, in offset order
    sizes = [len(batch.records) for batch, _ in recorder.batches]
    assert max(sizes) <= 2 * settings.consumer_max_batch  # a batch gathers at most one more fetch
    assert recorder.most_in_flight <= concurrency


async def test_a_partition_claimed_by_another_member_gets_no_commit_from_the_pipeline(consumer_settings, pool, moved):
    settings = pipeline_settings(consumer_settings, **STEADY_SESSION)  # a rebalance: member-1 would claim back
    first_half, second_half = history(200, seed=6), history(200, seed=7)
    consumer = EventConsumer(settings, pool, member="member-1")
    await consumer.start()
    try:
        async with running(consumer) as task:
            await stream(settings, first_half, per_second=2_000)
            await until(lambda: applied(pool, settings, len(first_half)), task)
            partitions = [TopicPartition(settings.kafka_resource_topic, n) for n in range(2)]
            async with pool.acquire() as conn:  # member-2 is assigned the partitions meanwhile
                await claim_partitions(conn, settings.kafka_consumer_group, "member-2", partitions)
            claimed = await applied_records(pool, settings)
            await stream(settings, second_half, per_second=2_000)
            await until(lambda: moved(FENCED) >= 2, task)  # member-1 tried, for each partition
    finally:
        await consumer.stop()
    assert await applied_records(pool, settings) == claimed
    owners = await pool.fetch(
        "SELECT DISTINCT owner FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
        settings.kafka_consumer_group,
        settings.kafka_resource_topic,
    )
    assert [row["owner"] for row in owners] == ["member-2"]


async def test_a_batch_read_again_after_the_database_failed_is_applied_once(
    consumer_settings, pool, moved, monkeypatch
):
    monkeypatch.setattr(consumer_module, "_DATABASE_RETRY_SECONDS", 0.05)
    settings = pipeline_settings(consumer_settings)
    documents = history(300, seed=8)
    consumer = EventConsumer(settings, pool, member="member-1")
    commit, failures = consumer._commit, list[int]()

    async def failing_commit(batch, *args):
        if len(failures) < 3 and batch.records[0].offset > 0:
            failures.append(batch.records[0].offset)
            await asyncio.sleep(0.2)  # while later records of the partition are gathered
            raise ConnectionResetError("the connection was cut")
        return await commit(batch, *args)

    monkeypatch.setattr(consumer, "_commit", failing_commit)
    await consumer.start()
    try:
        async with running(consumer) as task:
            await stream(settings, documents, per_second=3_000)
            await until(lambda: applied(pool, settings, len(documents)), task)
    finally:
        await consumer.stop()
    assert len(failures) == 3 and moved(DATABASE_RETRIES) == 3
    await assert_tables_match(pool, documents)
    assert moved(APPLIED) == len(documents)


async def test_a_halt_in_a_lane_stops_the_pipeline_before_the_offset_passes(consumer_settings, pool, moved):
    settings = pipeline_settings(consumer_settings, consumer_max_consecutive_failures=3)
    await produce_raw(settings, *[(b"r1", f"bad {n}".encode()) for n in range(6)])
    consumer = EventConsumer(settings, pool, member="member-1")
    await consumer.start()
    try:
        with pytest.raises(ConsumerHalted, match="3 consecutive messages failed"):
            async with running(consumer) as task:
                await until(lambda: task.done(), task)
    finally:
        await consumer.stop()
    # Never past the third failure: the batch that holds it is neither dead-lettered nor stored.
    assert await applied_records(pool, settings) <= 2
    assert moved(DEAD_LETTERED) <= 2


async def test_a_stop_commits_the_batch_being_applied(consumer_settings, pool, moved, monkeypatch):
    settings = pipeline_settings(consumer_settings)
    documents = history(50, seed=9)
    consumer = EventConsumer(settings, pool, member="member-1")
    commit, committing, release = consumer._commit, asyncio.Event(), asyncio.Event()

    async def held_commit(*args):
        committing.set()  # inside the batch's application: ownership cannot change meanwhile
        await release.wait()
        return await commit(*args)

    monkeypatch.setattr(consumer, "_commit", held_commit)
    await consumer.start()
    try:
        stopping = asyncio.Event()
        task = asyncio.create_task(consumer.run(stopping))
        await stream(settings, documents, per_second=1_000)
        await until(committing.is_set, task)
        stopping.set()  # while a batch is being applied
        await asyncio.sleep(0.1)
        assert not task.done()  # it waits for the batch in hand
        release.set()
        await task
    finally:
        await consumer.stop()
    assert moved(APPLIED) > 0
    assert await applied_records(pool, settings) > 0


async def test_a_change_of_ownership_waits_for_the_batches_being_applied_and_goes_before_new_ones():
    ownership = Ownership(cast(Any, None), cast(Any, None), "group", "member", RuntimeError)
    order: list[str] = []
    done_changing = asyncio.Event()

    async def change() -> None:
        async with ownership.changing():
            order.append("change")
            await done_changing.wait()

    async def apply(name: str) -> None:
        async with ownership.applying():
            order.append(name)

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async with ownership.applying():
        order.append("first batch")
        changing = asyncio.create_task(change())
        await settle()
        later = asyncio.create_task(apply("later batch"))
        await settle()
        assert order == ["first batch"]  # the change waits for the batch; the later batch for the change
    await settle()
    assert order == ["first batch", "change"]
    done_changing.set()
    await asyncio.gather(changing, later)
    assert order == ["first batch", "change", "later batch"]
