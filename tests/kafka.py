"""Driving the real consumer against the real broker."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumers.consumer import EventConsumer
from consumers.topics import produce_documents
from core.events import Event
from core.settings import Settings


def document(event: Event) -> dict:
    return event.model_dump(mode="json", by_alias=True)


async def produce(settings: Settings, *events: Event) -> None:
    await produce_documents(settings, [document(event) for event in events])


async def produce_raw(settings: Settings, *messages: tuple[bytes | None, bytes], **producer: Any) -> None:
    """(key, value) pairs, in order, to the resource topic; `producer` sets the producer up
    (compression, size limit)."""
    sender = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, **producer)
    await sender.start()
    try:
        for key, value in messages:
            await sender.send_and_wait(settings.kafka_resource_topic, value, key=key)
    finally:
        await sender.stop()


# A group session that outlasts a loaded machine's stalls, for a test whose outcome a rebalance would
# change. The tests' default is 2 s (tests/conftest.py), since the local broker holds a join for half
# the session timeout.
STEADY_SESSION = {"consumer_session_timeout_ms": 8000, "consumer_heartbeat_interval_ms": 500}


async def consume_until(consumer: EventConsumer, condition, *, seconds: float = 60) -> None:
    """Step the consumer until `condition()` (sync or async) holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if hasattr(result, "__await__"):
            result = await result
        if result:
            return
        await consumer.run_once(timeout_ms=200)
    raise AssertionError("the consumer never reached the expected state")


async def read_topic(settings: Settings, topic: str, count: int) -> list:
    """The first `count` records of a topic (across its partitions)."""
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await reader.start()
    try:
        records = []
        for _ in range(50):
            batches = await reader.getmany(timeout_ms=200)
            records += [record for batch in batches.values() for record in batch]
            if len(records) >= count:
                return records
        return records
    finally:
        await reader.stop()
