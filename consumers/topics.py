"""Topics: their names, creating them when configured to, and producing events to them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from core import jsontext
from core.events import RESOURCE_TYPES, USER_TYPES
from core.settings import Settings

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"


def event_topics(settings: Settings) -> list[str]:
    return [settings.kafka_resource_topic, settings.kafka_user_topic]


def topic_types(settings: Settings) -> dict[str, frozenset[str]]:
    """The event types each topic carries: an event on another topic is dead-lettered."""
    return {settings.kafka_resource_topic: RESOURCE_TYPES, settings.kafka_user_topic: USER_TYPES}


def dead_letter_topic(topic: str) -> str:
    return topic + DLQ_SUFFIX


def partition_name(partition: TopicPartition) -> str:
    return f"{partition.topic}[{partition.partition}]"


async def ensure_topics(settings: Settings) -> None:
    """Create the event topics and their dead-letter topics when they are missing."""
    names = [name for topic in event_topics(settings) for name in (topic, dead_letter_topic(topic))]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another replica created them first
                await admin.create_topics(
                    [
                        NewTopic(name, settings.kafka_topic_partitions, settings.kafka_topic_replication_factor)
                        for name in missing
                    ]
                )
            log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()


class UnroutableEvent(ValueError):
    pass


def route(settings: Settings, document: Mapping[str, Any]) -> tuple[str, str]:
    """The topic and key an event document belongs to (resource events by resourceId, user events
    by userId)."""
    event_type = document.get("type")
    if event_type in RESOURCE_TYPES and isinstance(document.get("resourceId"), str):
        return settings.kafka_resource_topic, document["resourceId"]
    if event_type in USER_TYPES and isinstance(document.get("userId"), str):
        return settings.kafka_user_topic, document["userId"]
    raise UnroutableEvent(f"cannot route an event of type {event_type!r} (or it lacks its key field)")


def read_event_lines(path: Path) -> list[dict[str, Any]]:
    """Event documents from a JSON-lines file; every line must be a JSON object."""
    documents, problems = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = jsontext.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(document, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        documents.append(document)
    if problems:
        raise ValueError("; ".join(problems))
    return documents


async def produce_documents(settings: Settings, documents: Iterable[Mapping[str, Any]]) -> int:
    """Publish event documents to their topics, keyed as the contract says; waits for every ack."""
    routed = [(route(settings, document), document) for document in documents]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, json.dumps(document).encode(), key=key.encode())
            for (topic, key), document in routed
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(routed)
