"""The consumer against the real broker and PostgreSQL: events in, rows and HTTP answers out."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
import pytest

from consumers.consumer import EventConsumer
from consumers.decoding import decode
from consumers.offsets import Fenced, claim_partitions, commit_partition_batch
from consumers.pipeline import Batch, ConsumerHalted
from core.events import RESOURCE_TYPES, Event
from devtools.tansu import tansu_broker
from tests.factories import JWT_SECRET, at, imported, login, published, user_upserted
from tests.kafka import consume_until, document, produce, produce_raw, read_topic
from tests.metrics import APPLIED, DEAD_LETTERED, FANNED_OUT, FENCED, SKIPPED, Moved


async def stored_offsets(pool, settings):
    rows = await pool.fetch(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
        settings.kafka_consumer_group,
    )
    return {(r["topic"], r["partition"]): r["next_offset"] or 0 for r in rows}


async def test_events_become_what_users_see(consumer, consumer_settings, client, pool, moved):
    await produce(
        consumer_settings,
        user_upserted("u1"),
        user_upserted("u2", name="Colleague Two", canvasUserId="42"),
        published("r1", 1, at_time=at(0)),
        imported("u1", "r1", "c1", at(1)),
        imported("u1", "r1", "c2", at(2)),
        published("r1", 2, at_time=at(10)),
    )
    await consume_until(consumer, lambda: moved(APPLIED) == 6)
    headers = {"X-Session-ID": await login(pool, "u1")}

    response = await client.get("/api/users/u1/updates/r1", headers=headers)
    body = await response.json()
    assert response.status == 200 and body["versionId"] == "r1-v2"
    assert [c["courseId"] for c in body["courses"]] == ["c2", "c1"]
    imports = await (await client.get("/api/resources?onlyImported=true", headers=headers)).json()
    assert [r["id"] for r in imports["items"]] == ["r1"]
    profile = await (await client.get("/api/users/u2/profile", headers=headers)).json()
    assert profile == {"url": "https://canvas.example.edu/about/42"}

    assert (
        await client.post("/api/users/u1/updates/r1/ignore", json={"courseIds": ["c1"]}, headers=headers)
    ).status == 204
    await produce(consumer_settings, published("r1", 3, at_time=at(20)))
    await consume_until(consumer, lambda: pool.fetchval("SELECT version_number = 3 FROM available_updates"))
    body = await (await client.get("/api/users/u1/updates/r1", headers=headers)).json()
    assert [c["courseId"] for c in body["courses"]] == ["c2", "c1"]  # the newer version re-pends c1

    assert sum((await stored_offsets(pool, consumer_settings)).values()) == 7
    assert moved(APPLIED) == 7


async def test_poison_messages_are_dead_lettered_and_the_good_ones_applied(
    consumer, consumer_settings, pool, moved, caplog
):
    topic = consumer_settings.kafka_resource_topic
    good: list[Event] = [published("r1", 1), imported("u1", "r1", "c1", at(1)), published("r1", 2, at_time=at(5))]
    unknown_type = {**document(good[0]), "type": "resource.renamed"}
    future_schema = {**document(good[0]), "schemaVersion": 2}
    missing_field = {k: v for k, v in document(good[1]).items() if k != "courseId"}
    values = [
        json.dumps(document(good[0])).encode(),
        b"{not json",
        json.dumps(missing_field).encode(),
        json.dumps(document(good[1])).encode(),
        json.dumps(unknown_type).encode(),
        json.dumps(future_schema).encode(),
        b"[1, 2]",
        json.dumps(document(good[2])).encode(),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=consumer_settings.kafka_bootstrap_servers)
    await producer.start()
    for value in values:  # one key: one partition, in this order
        await producer.send_and_wait(topic, value, key=b"r1")
    await producer.stop()

    await consume_until(consumer, lambda: pool.fetchval("SELECT count(*) = 1 FROM available_updates"))
    await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 4)

    dead = await read_topic(consumer_settings, topic + ".dlq", 4)
    reasons = {record.value: dict(record.headers)["error"].decode() for record in dead}
    assert set(reasons) == {
        b"{not json",
        json.dumps(missing_field).encode(),
        json.dumps(future_schema).encode(),
        b"[1, 2]",
    }
    assert reasons[b"{not json"].startswith("invalid JSON")
    assert "courseId" in reasons[json.dumps(missing_field).encode()]
    assert "schemaVersion 2" in reasons[json.dumps(future_schema).encode()]
    for record in dead:
        headers = dict(record.headers)
        assert headers["source-topic"] == topic.encode() and record.key == b"r1"
        assert int(headers["source-offset"]) in range(8)
        # The log names each as `commons-users dlq show` takes it.
        name = f"{topic}/{headers['source-partition'].decode()}/{headers['source-offset'].decode()}"
        assert f"dead-lettered {name}: " in caplog.text
    assert moved(SKIPPED, type="unknown") == 1
    assert sum((await stored_offsets(pool, consumer_settings)).values()) == 8


async def test_a_run_of_failures_stops_the_consumer_instead(consumer_settings, pool):
    settings = consumer_settings.model_copy(update={"consumer_max_consecutive_failures": 3})
    consumer = EventConsumer(settings, pool, member="member-1")
    await consumer.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        for value in (json.dumps(document(published("r1", 1))).encode(), b"bad 1", b"bad 2", b"bad 3", b"bad 4"):
            await producer.send_and_wait(settings.kafka_resource_topic, value, key=b"r1")
        await producer.stop()
        with pytest.raises(ConsumerHalted, match="3 consecutive messages failed"):
            await consume_until(consumer, lambda: False)
        with pytest.raises(ConsumerHalted):  # and it stays stopped
            await consumer.run_once(timeout_ms=10)
        assert max((await stored_offsets(pool, settings)).values()) <= 3  # never past the third failure
    finally:
        await consumer.stop()


async def test_crash_after_the_database_commit_applies_nothing_twice(consumer_settings, pool, moved):
    await produce(consumer_settings, published("r1", 1), imported("u1", "r1", "c1", at(1)))
    first = EventConsumer(consumer_settings, pool, member="first")
    await first.start()
    while moved(APPLIED) < 2:  # the database commits, then a crash: no Kafka commit
        for batch in await first.fetch(500):
            await first.apply(batch)
    await first.stop()

    second = EventConsumer(consumer_settings, pool, member="second")
    by_second = Moved()
    await second.start()
    try:
        await produce(consumer_settings, imported("u1", "r1", "c2", at(2)))
        await consume_until(second, lambda: by_second(APPLIED) >= 1)
        for _ in range(3):
            await second.run_once(timeout_ms=200)
        assert by_second(APPLIED) == 1  # only the new event: the two were not applied again
    finally:
        await second.stop()
    assert await pool.fetchval("SELECT count(*) FROM imports") == 2


async def test_crash_before_the_database_commit_loses_nothing(consumer_settings, pool, moved):
    await produce(consumer_settings, published("r1", 1), imported("u1", "r1", "c1", at(1)))
    first = EventConsumer(consumer_settings, pool, member="first")
    await first.start()
    fetched = 0
    while fetched < 2:
        fetched += sum(len(batch.records) for batch in await first.fetch(500))
    await first.stop()  # crashed holding the batch

    second = EventConsumer(consumer_settings, pool, member="second")
    await second.start()
    try:
        await consume_until(second, lambda: moved(APPLIED) == 2)
    finally:
        await second.stop()
    assert await pool.fetchval("SELECT count(*) FROM imports") == 1


async def test_a_revoked_owner_cannot_commit_late(consumer, consumer_settings, pool, moved):
    await produce(consumer_settings, published("r1", 1))
    batches: list[Batch] = []
    while not batches:
        batches = await consumer.fetch(500)
    (batch,) = batches
    group = consumer_settings.kafka_consumer_group
    async with pool.acquire() as conn:  # another member is assigned the partition meanwhile
        await claim_partitions(conn, group, "member-2", [batch.partition])
        with pytest.raises(Fenced):
            async with conn.transaction():
                await commit_partition_batch(
                    conn,
                    group,
                    "member-1",
                    batch.generation,
                    batch.partition,
                    [decode(r, RESOURCE_TYPES) for r in batch.records],
                    batch.records[-1].offset + 1,
                )
    assert await pool.fetchval("SELECT count(*) FROM resources") == 0
    assert await consumer.consume(batches) == 0  # the loop drops the batch and goes on
    assert moved(FENCED) == 1


async def test_two_members_share_the_partitions_and_apply_each_event_once(consumer_settings, pool, moved):
    members = [EventConsumer(consumer_settings, pool, member=f"member-{n}") for n in (1, 2)]
    for member in members:
        await member.start()
    try:
        events = [imported(f"u{n}", f"r{n % 5}", "c1", at(n)) for n in range(40)]
        await produce(consumer_settings, *events)
        async with asyncio.timeout(60):  # the members join, maybe again, then apply
            while moved(APPLIED) < 40:
                await asyncio.gather(*(member.run_once(timeout_ms=100) for member in members))
        assert moved(APPLIED) == 40
        assert members[0].assignment.isdisjoint(members[1].assignment)
    finally:
        for member in members:
            await member.stop()
    assert await pool.fetchval("SELECT count(*) FROM imports") == 40


async def test_missing_topics_are_created_when_configured(consumer, consumer_settings):
    admin = AIOKafkaAdminClient(bootstrap_servers=consumer_settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    resource, user = consumer_settings.kafka_resource_topic, consumer_settings.kafka_user_topic
    assert {resource, user, resource + ".dlq", user + ".dlq"} <= topics


async def test_a_stored_offset_beyond_the_log_end_stops_the_consumer(consumer_settings, pool, moved):
    async with pool.acquire() as conn:
        await claim_partitions(
            conn,
            consumer_settings.kafka_consumer_group,
            "old",
            [TopicPartition(consumer_settings.kafka_resource_topic, 0)],
        )
        await conn.execute("UPDATE consumer_offsets SET next_offset = 1000")
    consumer = EventConsumer(consumer_settings, pool, member="member-1")
    await consumer.start()
    try:
        with pytest.raises(ConsumerHalted, match="beyond the end"):
            await consume_until(consumer, lambda: False)
    finally:
        await consumer.stop()

    replaying = EventConsumer(
        consumer_settings.model_copy(update={"consumer_offset_beyond_end": "replay"}), pool, member="member-2"
    )
    await replaying.start()
    try:
        await produce(consumer_settings, published("r1", 1))
        await consume_until(replaying, lambda: moved(APPLIED) == 1)
    finally:
        await replaying.stop()


def test_produce_command_publishes_a_file_and_refuses_bad_lines(consumer_settings, tmp_path):
    env = {
        **os.environ,
        "JWT_SECRET": JWT_SECRET,
        "DATABASE_URL": consumer_settings.database_url.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": consumer_settings.kafka_bootstrap_servers,
        "KAFKA_RESOURCE_TOPIC": consumer_settings.kafka_resource_topic,
        "KAFKA_USER_TOPIC": consumer_settings.kafka_user_topic,
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(document(published("r1", 1))) + "\n{oops\n" + json.dumps({"type": "x"}) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "service", "produce", str(bad)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "line 2" in result.stderr

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(document(e)) + "\n" for e in (published("r1", 1), user_upserted("u1"))))
    result = subprocess.run(
        [sys.executable, "-m", "service", "produce", str(good)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "produced 2 events" in result.stdout
    resource_records = asyncio.run(read_topic(consumer_settings, consumer_settings.kafka_resource_topic, 1))
    assert [r.key for r in resource_records] == [b"r1"]


async def test_a_consumer_stopped_while_its_broker_is_out_of_reach_stops_without_error(consumer_settings, pool):
    # The fetches then fail, each waiting 0.1 s to retry, when stop() cancels them.
    with tansu_broker() as bootstrap:
        settings = consumer_settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
        consumer = EventConsumer(settings, pool, member="member-1")
        await consumer.start()
        await consume_until(consumer, lambda: consumer.assignment)
    for _ in range(5):  # while the fetches fail
        assert await consumer.fetch(100) == []
    await consumer.stop()
    assert consumer._kafka._client._conns == {}  # every connection closed


def test_sigterm_finishes_commits_and_leaves(consumer_settings, pool):
    env = {
        **os.environ,
        "JWT_SECRET": JWT_SECRET,
        "DATABASE_URL": consumer_settings.database_url.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": consumer_settings.kafka_bootstrap_servers,
        "KAFKA_CREATE_TOPICS": "true",
        "KAFKA_RESOURCE_TOPIC": consumer_settings.kafka_resource_topic,
        "KAFKA_USER_TOPIC": consumer_settings.kafka_user_topic,
        "KAFKA_CONSUMER_GROUP": consumer_settings.kafka_consumer_group,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "consumer"],
        env={**env, "CONSUMER_HEALTH_PORT": "0"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        asyncio.run(produce(consumer_settings, *(imported("u1", "r1", f"c{n}", at(n)) for n in range(20))))

        async def count():
            import asyncpg

            conn = await asyncpg.connect(consumer_settings.database_url.get_secret_value())
            try:
                return await conn.fetchval("SELECT count(*) FROM imports")
            finally:
                await conn.close()

        deadline = time.monotonic() + 60
        while asyncio.run(count()) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        assert process.stdout is not None
        output = process.stdout.read()
        process.stdout.close()
    messages = [json.loads(line)["message"] for line in output.splitlines()]  # JSON lines
    assert any("left the group" in message for message in messages)
    assert asyncio.run(count()) == 20


async def test_events_postgresql_would_refuse_are_dead_lettered_not_retried_forever(
    consumer, consumer_settings, pool, moved
):
    nul = {**document(published("r1", 1)), "versionNotes": "bad\u0000notes"}
    huge = {
        **document(published("r1", 1)),
        "resource": {**document(published("r1", 1))["resource"], "title": "x" * 501},
    }
    far = {**document(imported("u1", "r1", "c1", at(1))), "importedAt": "0001-01-01T00:00:00+01:00"}
    wrong_key = document(imported("u1", "r1", "c1", at(1)))
    await produce_raw(
        consumer_settings,
        *[(b"r1", json.dumps(doc).encode()) for doc in (nul, huge, far)],
        (b"r2", json.dumps(wrong_key).encode()),
        (b"r1", json.dumps(document(published("r1", 1))).encode()),
    )
    await consume_until(consumer, lambda: moved(APPLIED) == 1)
    dead = await read_topic(consumer_settings, consumer_settings.kafka_resource_topic + ".dlq", 4)
    reasons = {dict(record.headers)["error"].decode() for record in dead}  # a dead letter may be sent twice
    assert len(reasons) == 4
    assert any("versionNotes must be UTF-8 text without NUL" in r for r in reasons)
    assert any("resource.title" in r and "500" in r for r in reasons)
    assert any("importedAt" in r for r in reasons)
    assert any("the message key must be 'r1'" in r for r in reasons)


async def test_a_batch_postgresql_refuses_is_applied_event_by_event(consumer, consumer_settings, pool, moved):
    # A rule of the database that validation does not know: the one event it refuses is
    # dead-lettered, the others in its batch are applied.
    await pool.execute("ALTER TABLE resources ADD CONSTRAINT test_refuses CHECK (title <> 'refused')")
    try:
        await produce(consumer_settings, published("r1", 1), published("r2", 1, title="refused"), published("r3", 1))
        await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 1 and moved(APPLIED) == 2)
        assert await pool.fetchval("SELECT array_agg(id ORDER BY id) FROM resources") == ["r1", "r3"]
        dead = await read_topic(consumer_settings, consumer_settings.kafka_resource_topic + ".dlq", 1)
        assert "refused by the database" in dict(dead[0].headers)["error"].decode()
    finally:
        await pool.execute("ALTER TABLE resources DROP CONSTRAINT test_refuses")


async def test_the_failure_run_survives_a_restart(consumer_settings, pool, moved):
    settings = consumer_settings.model_copy(update={"consumer_max_consecutive_failures": 4})
    await produce_raw(settings, (b"r1", b"bad 1"), (b"r1", b"bad 2"))
    first = EventConsumer(settings, pool, member="first")
    await first.start()
    try:
        await consume_until(first, lambda: moved(DEAD_LETTERED) == 2)
    finally:
        await first.stop()
    await produce_raw(settings, (b"r1", b"bad 3"), (b"r1", b"bad 4"), (b"r1", b"bad 5"))
    second = EventConsumer(settings, pool, member="second")
    by_second = Moved()
    await second.start()
    try:
        with pytest.raises(ConsumerHalted, match="4 consecutive"):
            await consume_until(second, lambda: False)
        assert by_second(DEAD_LETTERED) == 0  # halted on the 4th in a row, counting the first run's
    finally:
        await second.stop()


async def test_one_version_fans_out_to_100000_importers(consumer, consumer_settings, client, pool, moved):
    await produce(consumer_settings, published("r-big", 1))
    await consume_until(consumer, lambda: moved(APPLIED) == 1)
    await pool.execute(
        """
        INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
        SELECT 'user-' || n, 'r-big', 'c1', 'Course', 'r-big-v1', 1, now() FROM generate_series(1, 100000) AS n
        """
    )
    await produce(consumer_settings, published("r-big", 2, at_time=at(5)))
    await consume_until(consumer, lambda: moved(APPLIED) == 2)

    assert moved(FANNED_OUT) == 100_000
    assert await pool.fetchval("SELECT count(*) FROM available_updates WHERE version_number = 2") == 100_000
    headers = {"X-Session-ID": await login(pool, "user-73512")}
    body = await (await client.get("/api/users/user-73512/updates/r-big", headers=headers)).json()
    assert body["versionId"] == "r-big-v2" and [c["courseId"] for c in body["courses"]] == ["c1"]
