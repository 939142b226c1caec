"""Dead letters read back and replayed (`commons-users dlq`, README: "Dead letters") against the real
broker, with the real consumer applying what is replayed."""

import re

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
import pytest

from consumers import dead_letter_report
from consumers.dead_letters import REPLAYED_FROM, Action, DeadLetterReader, Filters, Republisher, replay
from consumers.topics import event_topics
from tests.factories import published, user_upserted
from tests.kafka import consume_until, produce, produce_raw, read_topic
from tests.metrics import APPLIED, DEAD_LETTERED


@pytest.fixture
async def refusing(pool):
    """The database refuses resources titled 'refused' and users named 'Refused' until the test
    calls the fixture's value, which lifts both constraints."""
    tables = ("resources", "users")

    async def lift():
        for table in tables:
            await pool.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS test_refuses")

    await pool.execute("ALTER TABLE resources ADD CONSTRAINT test_refuses CHECK (title <> 'refused')")
    await pool.execute("ALTER TABLE users ADD CONSTRAINT test_refuses CHECK (name <> 'Refused')")
    yield lift
    await lift()


async def send(settings, topic, *records):
    """(partition or None, key, value) triples, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for partition, key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def ends(settings, topic) -> int:
    """The end offsets of a topic, summed: a record added raises them (on Tansu too, which lists the
    offset after the first record of the last batch)."""
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        return sum((await reader.end_offsets(partitions)).values())
    finally:
        await reader.stop()


async def dead_letters(settings, topics=None, since=None):
    """Every dead letter of the topics (both by default), read as the commands read them."""
    async with DeadLetterReader(settings.kafka_bootstrap_servers, topics or event_topics(settings), since) as reader:
        return reader.total, [letter async for batch in reader.batches() for letter in batch]


async def replayed(settings, capsys, filters=None, *, dry_run=False) -> list[str]:
    """What `dlq replay` prints."""
    servers, topics = settings.kafka_bootstrap_servers, event_topics(settings)
    filters = filters or Filters()
    assert await dead_letter_report.replay_dead_letters(servers, topics, filters, dry_run=dry_run) == 0
    return capsys.readouterr().out.splitlines()


async def listed(settings, capsys, filters=None, topics=None) -> list[str]:
    """The source of each dead letter `dlq list` prints."""
    topics = topics or event_topics(settings)
    servers, filters = settings.kafka_bootstrap_servers, filters or Filters()
    assert await dead_letter_report.list_dead_letters(servers, topics, filters) == 0
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()]


async def test_events_the_database_refused_are_applied_exactly_once_when_replayed_after_the_fix(
    consumer, consumer_settings, pool, moved, refusing, capsys
):
    settings = consumer_settings
    resource_topic, user_topic = event_topics(settings)
    await produce(
        settings,
        published("r1", 1),
        published("r2", 1, title="refused"),
        published("r3", 1, title="refused"),
        user_upserted("u1", name="Refused"),
    )
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 3 and moved(APPLIED) == 1)
    assert await pool.fetchval("SELECT array_agg(id) FROM resources") == ["r1"]

    await refusing()  # the fix: the database takes them now
    lines = await replayed(settings, capsys)
    assert sorted(line.split()[0] for line in lines[:-2]) == ["replayed"] * 3
    assert lines[-2] == "read 3 dead letters: 3 replayed, 0 stubs not replayed, 0 left by the filters"
    assert lines[-1].startswith("records that fail again are dead-lettered anew: commons-users dlq list --since ")

    async def consumed():
        stored = "SELECT sum(next_offset) FROM consumer_offsets WHERE consumer_group = $1"
        return await pool.fetchval(stored, settings.kafka_consumer_group) == 4 + 3

    await consume_until(consumer, consumed)
    assert moved(APPLIED) == 1 + 3 and moved(DEAD_LETTERED) == 3  # each replayed once, applied once
    assert await pool.fetchval("SELECT array_agg(id ORDER BY id) FROM resources") == ["r1", "r2", "r3"]
    assert await pool.fetchval("SELECT name FROM users WHERE id = 'u1'") == "Refused"
    copies = [*await read_topic(settings, resource_topic, 5), *await read_topic(settings, user_topic, 2)]
    origins = [dict(record.headers).get(REPLAYED_FROM) for record in copies]
    _, letters = await dead_letters(settings)
    assert sorted(filter(None, origins)) == sorted(letter.address.encode() for letter in letters)
    assert {record.key for record in copies if dict(record.headers)} == {b"r2", b"r3", b"u1"}


async def test_a_record_that_fails_again_is_dead_lettered_again_and_not_replayed_by_the_same_run(
    consumer, consumer_settings, moved, capsys, refusing
):
    settings, servers = consumer_settings, consumer_settings.kafka_bootstrap_servers
    await produce(settings, published("r2", 1, title="refused"), published("r2", 2, title="refused"))
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 2)
    _, [first, _] = await dead_letters(settings)

    actions = []
    async with DeadLetterReader(servers, event_topics(settings)) as reader, Republisher(servers) as republisher:
        async for _, action in replay(reader, republisher, Filters()):
            actions.append(action)
            if len(actions) == 1:  # while the run goes on, what it published fails again
                await consume_until(consumer, lambda: moved(DEAD_LETTERED) >= 3)
    assert actions == [Action.REPLAYED] * 2
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 4)

    # Dead-lettered anew, at the offsets of the copies; `--since` takes those only.
    assert await listed(settings, capsys) == [
        f"{settings.kafka_resource_topic}/{first.source_partition}/{n}" for n in range(4)
    ]
    _, letters = await dead_letters(settings)
    assert await listed(settings, capsys, Filters(since=letters[2].time)) == [letters[2].source, letters[3].source]


async def test_a_stub_names_the_offset_to_read_and_is_not_replayed(consumer, consumer_settings, moved, capsys):
    settings, topic = consumer_settings, consumer_settings.kafka_resource_topic
    await produce_raw(settings, (b"r1", b"x" * 1_200_000), max_request_size=20_000_000)
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 1)

    [stub, summary] = await replayed(settings, capsys)
    expected = (
        rf"not replayed {topic}/(\d)/0: a stub, without the value; read the record at offset 0 of {topic} partition \1"
    )
    assert re.fullmatch(expected, stub), stub
    assert summary == "read 1 dead letter: 0 replayed, 1 stub not replayed, 0 left by the filters"
    assert await ends(settings, topic) == 1


async def test_a_dry_run_publishes_nothing(consumer, consumer_settings, moved, capsys):
    settings, topic = consumer_settings, consumer_settings.kafka_resource_topic
    await produce_raw(settings, (b"r1", b"{not json"), (b"r1", b"[1, 2]"))
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 2)

    lines = await replayed(settings, capsys, dry_run=True)
    assert [re.sub(r"/\d+/", "/P/", line) for line in lines] == [
        f"would replay {topic}/P/0 key='r1' size=9",
        f"would replay {topic}/P/1 key='r1' size=6",
        "read 2 dead letters: 2 would replay, 0 stubs not replayed, 0 left by the filters; "
        "a dry run: nothing was published",
    ]
    assert await ends(settings, topic) == 2


async def test_filters_take_dead_letters_by_topic_time_and_reason(consumer, consumer_settings, moved, capsys):
    settings = consumer_settings
    resource_topic, user_topic = event_topics(settings)
    # One at a time, so that they are dead-lettered one after the other.
    for count, (topic, value) in enumerate(
        [(resource_topic, b"{not json"), (resource_topic, b'{"type": "resource.deleted"}'), (user_topic, b"{nor")],
        start=1,
    ):
        await send(settings, topic, (0, b"k", value))
        await consume_until(consumer, lambda count=count: moved(DEAD_LETTERED) == count)
    _, [a, b, c] = await dead_letters(settings)
    assert a.time < b.time < c.time and b.reason.startswith("schema: ")

    assert await listed(settings, capsys) == [a.source, b.source, c.source]
    assert await listed(settings, capsys, topics=[user_topic]) == [c.source]
    assert await listed(settings, capsys, Filters(reason="INVALID json")) == [a.source, c.source]
    assert await listed(settings, capsys, Filters(since=b.time)) == [b.source, c.source]
    assert await listed(settings, capsys, Filters(until=b.time)) == [a.source]
    assert await listed(settings, capsys, Filters(since=a.time, until=c.time, reason="schema")) == [b.source]
    total, _ = await dead_letters(settings, since=b.time)
    assert total == 2  # the broker's offsets for times: the reader starts at b, not before

    lines = await replayed(settings, capsys, Filters(reason="schema"), dry_run=True)
    assert lines[-1].startswith("read 3 dead letters: 1 would replay, 0 stubs not replayed, 2 left by the filters")


async def test_show_prints_a_dead_letter_named_by_its_source_offset(consumer, consumer_settings, moved, capsys):
    settings, topic = consumer_settings, consumer_settings.kafka_resource_topic
    servers = settings.kafka_bootstrap_servers
    await send(
        settings,
        topic,
        (0, b"\xff\x00", b"\x1b[2Jnot json"),  # not UTF-8, and a terminal's escape
        (1, b"r1", b"caf\xc3\xa9 \xff"),
        (1, b"r1", '{"note": "café"}'.encode()),
    )
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 3)

    async def show(name, topics=None):
        status = await dead_letter_report.show_dead_letter(servers, topics or event_topics(settings), name)
        return status, *capsys.readouterr()

    assert await show("0") == (2, "", f"commons-users: offset 0 is ambiguous; show one of {topic}/0/0, {topic}/1/0\n")
    status, out, _ = await show(f"{topic}/0/0")
    lines = out.splitlines()
    assert status == 0 and "\x1b" not in out
    assert re.fullmatch(rf"dead letter {topic}\.dlq/\d+/\d+, written \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0])
    assert lines[1:3] == ["key: b'\\xff\\x00'", "headers:"]
    assert lines[3].startswith("  error: invalid JSON (UTF-8 is required)")
    assert lines[4:9] == [
        f"  source-topic: {topic}",
        "  source-partition: 0",
        "  source-offset: 0",
        "  source-size: 12",
        "value (12 bytes):",
    ]
    assert lines[9:] == ["'\\x1b[2Jnot json'"]
    address = lines[0].split()[2].rstrip(",")  # the dead letter's own, as show prints it
    assert await show(address) == (0, out, "")
    status, out, _ = await show(f"{topic}/1/0")
    assert status == 0 and out.splitlines()[-2:] == ["value (7 bytes):", "b'caf\\xc3\\xa9 \\xff'"]
    status, out, _ = await show("1")
    assert status == 0 and out.splitlines()[-1] == '{"note": "café"}'
    assert await show(f"{topic}/1/7", [topic]) == (
        1,
        "",
        f"commons-users: no dead letter of {topic}/1/7 in {topic}.dlq\n",
    )
