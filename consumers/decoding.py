"""From record bytes to events: what decodes is applied, an unknown type is skipped, and anything
else is dead-lettered to `<topic>.dlq` with the reason in its headers (README: "Events: the
contract for publishers")."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from consumers import metrics
from consumers.topics import dead_letter_topic
from core.events import EVENT_ADAPTER, KNOWN_TYPES, SUPPORTED_SCHEMA_VERSIONS, Envelope, Event, partition_key

log = logging.getLogger(__name__)

# A key longer than this is left out of a stub, which must stay small.
_STUB_KEY_BYTES = 1024


@dataclass(frozen=True)
class Decoded:
    """One record, parsed: an event to apply, a type to skip, or a failure to dead-letter."""

    record: ConsumerRecord[bytes, bytes]
    event: Event | None = None
    unknown_type: str | None = None
    failure: str | None = None


def _reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return f"invalid JSON (UTF-8 is required): {errors[0]['msg']}"
    if any(e["type"] == "model_type" and not e["loc"] for e in errors):
        return "the value is not a JSON object"
    return "schema: " + "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in errors)


def decode(record: ConsumerRecord[bytes, bytes], topic_types: frozenset[str]) -> Decoded:
    """Parse a record of a topic that carries `topic_types`. Only UTF-8 JSON is read, and a value of
    the wrong JSON type is refused (core/events.py)."""
    value = record.value if record.value is not None else b""
    try:
        # One parse for the usual record, a known event: the envelope is part of every event.
        event = EVENT_ADAPTER.validate_json(value)
    except ValidationError:
        return _classify(record, value, topic_types)
    if event.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
        return Decoded(record, failure=f"unsupported schemaVersion {event.schema_version}")
    if event.type not in topic_types:
        return Decoded(record, failure=f"a {event.type} event does not belong on {record.topic}")
    return _keyed(record, event)


def _classify(record: ConsumerRecord[bytes, bytes], value: bytes, topic_types: frozenset[str]) -> Decoded:
    """What is wrong with a value that is not a valid known event, the envelope first: an unknown
    type is skipped, the rest dead-lettered with the reason."""
    try:
        envelope = Envelope.model_validate_json(value)
        if envelope.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            return Decoded(record, failure=f"unsupported schemaVersion {envelope.schema_version}")
        if envelope.type not in KNOWN_TYPES:
            return Decoded(record, unknown_type=envelope.type)
        if envelope.type not in topic_types:
            return Decoded(record, failure=f"a {envelope.type} event does not belong on {record.topic}")
        event = EVENT_ADAPTER.validate_json(value)
    except ValidationError as exc:
        return Decoded(record, failure=_reason(exc))
    return _keyed(record, event)


def _keyed(record: ConsumerRecord[bytes, bytes], event: Event) -> Decoded:
    key = partition_key(event)
    if record.key is None or record.key.decode(errors="replace") != key:
        return Decoded(record, failure=f"the message key must be {key!r}, the id the event is about")
    return Decoded(record, event=event)


class DeadLetterFailed(Exception):
    """A dead letter could not be written: the offset must not pass its record."""


class DeadLetters:
    """The producer of dead letters: each failed record, unchanged, with headers `error`,
    `source-topic`, `source-partition`, `source-offset` and `source-size`. A record too large for
    the dead-letter topic goes as a stub, without its value, and a `stub` header says so: it is
    read at its source offset."""

    def __init__(self, bootstrap_servers: str, timeout_seconds: float) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        self._timeout = timeout_seconds

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, failures: list[Decoded]) -> None:
        """Send each in order and wait for the acks, so that the caller commits the offsets only
        afterwards: a dead letter may be sent twice, never lost. DeadLetterFailed when one cannot
        be written."""
        try:
            async with asyncio.timeout(self._timeout):
                sent = [(failure, await self._copy(failure)) for failure in failures]
                for failure, delivery in sent:
                    try:
                        await delivery
                    except MessageSizeTooLargeError:  # the broker's limit is below the producer's
                        await (await self._stub(failure))
        except (KafkaError, TimeoutError) as exc:
            raise DeadLetterFailed(f"{type(exc).__name__}: {exc}") from exc
        for failure in failures:
            record = failure.record
            # As `commons-users dlq show` names it (README: "Dead letters").
            log.warning("dead-lettered %s/%d/%d: %s", record.topic, record.partition, record.offset, failure.failure)
            metrics.DEAD_LETTERED.labels(record.topic).inc()

    @staticmethod
    def _headers(failure: Decoded) -> list[tuple[str, bytes]]:
        record = failure.record
        return [
            ("error", (failure.failure or "").encode()),
            ("source-topic", record.topic.encode()),
            ("source-partition", str(record.partition).encode()),
            ("source-offset", str(record.offset).encode()),
            ("source-size", str(len(record.value or b"")).encode()),
        ]

    async def _copy(self, failure: Decoded) -> Awaitable[object]:
        record = failure.record
        try:
            delivery: Awaitable[object] = await self._producer.send(
                dead_letter_topic(record.topic), record.value, key=record.key, headers=self._headers(failure)
            )
        except MessageSizeTooLargeError:  # over the producer's own limit
            return await self._stub(failure)
        return delivery

    async def _stub(self, failure: Decoded) -> Awaitable[object]:
        record = failure.record
        headers = [*self._headers(failure), ("stub", b"the value was left out: read it at the source offset")]
        key = record.key if record.key is not None and len(record.key) <= _STUB_KEY_BYTES else None
        delivery: Awaitable[object] = await self._producer.send(
            dead_letter_topic(record.topic), None, key=key, headers=headers
        )
        return delivery
