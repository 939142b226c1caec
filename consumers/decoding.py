"""From record bytes to events: what decodes is applied, an unknown type is skipped, and anything
else is dead-lettered to `<topic>.dlq` with the reason in its headers."""

from __future__ import annotations

from dataclasses import dataclass
import logging

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from consumers import metrics
from consumers.topics import dead_letter_topic, partition_name
from core import jsontext
from core.events import EVENT_ADAPTER, KNOWN_TYPES, SUPPORTED_SCHEMA_VERSIONS, Envelope, Event, partition_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """One record, parsed: an event to apply, a type to skip, or a failure to dead-letter."""

    record: ConsumerRecord[bytes, bytes]
    event: Event | None = None
    unknown_type: str | None = None
    failure: str | None = None


def decode(record: ConsumerRecord[bytes, bytes]) -> Decoded:
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
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        return Decoded(record, failure=f"schema: {problems}")
    key = partition_key(event)
    if record.key is None or record.key.decode(errors="replace") != key:
        return Decoded(record, failure=f"the message key must be {key!r}, the id the event is about")
    return Decoded(record, event=event)


class DeadLetters:
    """The producer of dead letters: each failed record, unchanged, with headers `error`,
    `source-topic`, `source-partition` and `source-offset`."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, failures: list[Decoded]) -> None:
        """Send and wait for the acks, so that the caller commits the offsets only afterwards: a
        dead letter may be sent twice, never lost."""
        sends = []
        for failure in failures:
            record = failure.record
            headers = [
                ("error", (failure.failure or "").encode()),
                ("source-topic", record.topic.encode()),
                ("source-partition", str(record.partition).encode()),
                ("source-offset", str(record.offset).encode()),
            ]
            sends.append(
                await self._producer.send(
                    dead_letter_topic(record.topic), record.value, key=record.key, headers=headers
                )
            )
            where = partition_name(TopicPartition(record.topic, record.partition))
            log.warning("dead-lettered %s offset %d: %s", where, record.offset, failure.failure)
        for sent in sends:
            await sent
        for failure in failures:
            metrics.DEAD_LETTERED.labels(failure.record.topic).inc()
