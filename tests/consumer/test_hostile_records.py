"""What a careless or hostile publisher sends: records of any size, any codec, corrupt batches, loose
types, events on the wrong topic, made-up types. Each is applied or dead-lettered, and consumption
goes on; what cannot be handled stops the consumer without its offset passing the record."""

import json
import struct

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
import pytest

from consumers.consumer import EventConsumer
from consumers.pipeline import Batch, ConsumerHalted
from devtools.tansu import tansu_broker
from tests.factories import at, imported, make_settings, published, user_upserted
from tests.kafka import STEADY_SESSION, consume_until, document, produce_raw, read_topic
from tests.metrics import APPLIED, DEAD_LETTERED, SKIPPED, scraped


def encoded(event) -> bytes:
    return json.dumps(document(event)).encode()


async def stored_offset(pool, settings, topic):
    return await pool.fetchval(
        "SELECT max(next_offset) FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
        settings.kafka_consumer_group,
        topic,
    )


async def test_records_of_any_size_are_applied_or_dead_lettered_as_stubs(consumer, consumer_settings, pool, moved):
    # Not events, of the sizes that stopped the consumer: near the producer's 1 MiB limit and above it.
    sizes = [1_048_410, 1_200_000, 10_000_000]
    large = [(b"r1", b"x" * size) for size in sizes]
    await produce_raw(consumer_settings, *large, (b"r1", encoded(published("r1", 1))), max_request_size=20_000_000)

    await consume_until(consumer, lambda: moved(APPLIED) == 1 and moved(DEAD_LETTERED) == 3)
    dead = await read_topic(consumer_settings, consumer_settings.kafka_resource_topic + ".dlq", 3)
    by_offset = {int(dict(record.headers)["source-offset"]): record for record in dead}
    assert sorted(by_offset) == [0, 1, 2]
    for offset, size in enumerate(sizes):
        record, headers = by_offset[offset], dict(by_offset[offset].headers)
        assert int(headers["source-size"]) == size and record.key == b"r1"
        assert headers["error"].startswith(b"invalid JSON")
        if offset > 0:  # too large to copy: a stub that says where to read it
            assert record.value is None and b"source offset" in headers["stub"]
    assert await stored_offset(pool, consumer_settings, consumer_settings.kafka_resource_topic) == 4


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_every_kafka_codec_is_read(consumer, consumer_settings, pool, moved, codec):
    events = [published("r1", 1), imported("u1", "r1", "c1", at(1)), published("r1", 2, at_time=at(2))]
    await produce_raw(consumer_settings, *[(b"r1", encoded(event)) for event in events], compression_type=codec)
    await consume_until(consumer, lambda: moved(APPLIED) == 3)
    assert await pool.fetchval("SELECT version_number FROM available_updates WHERE user_id = 'u1'") == 2


def corrupt_batch(value: bytes) -> bytes:
    """A record batch whose CRC does not match its bytes, as a broken publisher or disk makes one."""
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
        batch_size=1 << 20,
    )  # fmt: skip
    builder.append(0, timestamp=None, key=b"r1", value=value, headers=[])
    data = bytearray(builder.build())
    data[17:21] = struct.pack(">I", calc_crc32c(bytes(data[21:])) ^ 1)
    return bytes(data)


async def produce_batch(settings, data: bytes) -> None:
    from aiokafka.protocol.produce import ProduceRequest

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.kafka_resource_topic, encoded(published("r1", 1)), key=b"r1")
        partition = TopicPartition(settings.kafka_resource_topic, 0)
        node = producer.client.cluster.leader_for_partition(partition)
        request = ProduceRequest(
            required_acks=-1, timeout=5000, topics=[(partition.topic, [(0, data)])], transactional_id=None
        )
        await producer.client.send(node, request)
    finally:
        await producer.stop()


async def test_a_corrupt_batch_stops_the_consumer_where_it_is_never_skipped(consumer, consumer_settings, pool):
    await consume_until(consumer, lambda: consumer.assignment)  # else it halts holding nothing, on a busy machine
    await produce_batch(consumer_settings, corrupt_batch(encoded(published("r2", 1))))
    with pytest.raises(ConsumerHalted, match=r"CorruptRecordException.*\[0\] from offset [01]\b"):
        await consume_until(consumer, lambda: False)
    with pytest.raises(ConsumerHalted):  # and it stays stopped
        await consumer.run_once(timeout_ms=10)
    # The good record before it may be applied; the corrupt batch, at offset 1, is never passed.
    assert (await stored_offset(pool, consumer_settings, consumer_settings.kafka_resource_topic) or 0) <= 1


async def apply_all(consumer, batches):
    for batch in batches:
        await consumer.apply(batch)


async def test_a_dead_letter_that_cannot_be_written_stops_the_consumer_before_its_offset(database_url, pool):
    with tansu_broker() as bootstrap:
        settings = make_settings(
            database_url, kafka_bootstrap_servers=bootstrap, kafka_create_topics=True, kafka_topic_partitions=1,
            **STEADY_SESSION,  # a rebalance would fence the batch
            consumer_dead_letter_timeout_seconds=2,
        )  # fmt: skip
        consumer = EventConsumer(settings, pool, member="member-1")
        await consumer.start()
        await produce_raw(settings, (b"r1", b"not json"))
        batches: list[Batch] = []
        while not batches:
            batches = await consumer.fetch(500)
    try:  # the broker is gone: the dead letter cannot be written
        assert all(consumer.ownership.generation(b.partition) == b.generation for b in batches), "rebalanced"
        with pytest.raises(ConsumerHalted, match="could not be written"):
            await apply_all(consumer, batches)
        assert not await stored_offset(pool, settings, settings.kafka_resource_topic)
    finally:
        with tansu_broker(int(bootstrap.rpartition(":")[2])):  # a broker to leave the group from
            await consumer.stop()


LOOSE: dict[str, dict[str, object]] = {
    "versionNumber true": {"versionNumber": True},
    "versionNumber text": {"versionNumber": "3"},
    "versionNumber float": {"versionNumber": 3.0},
    "schemaVersion text": {"schemaVersion": "1"},
    "publishedAt a number": {"publishedAt": 1767225600},
}


async def test_loose_types_and_other_encodings_are_dead_lettered(consumer, consumer_settings, pool, moved):
    good = document(published("r1", 1))
    loose = [json.dumps({**good, **change}).encode() for change in LOOSE.values()]
    utf16 = json.dumps(good).encode("utf-16")
    await produce_raw(consumer_settings, *[(b"r1", value) for value in [*loose, utf16]])
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == len(LOOSE) + 1)
    assert moved(APPLIED) == 0
    assert await pool.fetchval("SELECT count(*) FROM resources") == 0


async def test_an_event_on_the_wrong_topic_is_dead_lettered(consumer, consumer_settings, pool, moved):
    # Whoever may publish resources must not be able to make an admin.
    admin = user_upserted("intruder", isAdmin=True, roles=["group_manager"])
    await produce_raw(consumer_settings, (b"intruder", encoded(admin)))
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 1)
    dead = await read_topic(consumer_settings, consumer_settings.kafka_resource_topic + ".dlq", 1)
    assert b"does not belong on" in dict(dead[0].headers)["error"]
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


async def test_made_up_types_cannot_grow_the_metrics(consumer, consumer_settings, moved):
    made_up = [{**document(published("r1", 1)), "type": f"resource.made-up-{n}"} for n in range(40)]
    await produce_raw(consumer_settings, *[(b"r1", json.dumps(value).encode()) for value in made_up])
    await consume_until(consumer, lambda: moved(SKIPPED, type="unknown") == 40)
    from prometheus_client import generate_latest

    page = generate_latest().decode()
    assert "made-up" not in page
    assert scraped(page, SKIPPED, type="unknown") >= 40
