"""Faults survived by real consumer processes: SIGKILL at random moments, a member killed while
another shares the group, database connections cut, the broker stopped and restarted. After each,
the tables equal the reference model of every event produced: nothing lost, nothing applied twice.

The bounded forms run in `make test`; `pytest -m long` runs longer ones (docs/reliability.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
import random
import signal
import subprocess

import asyncpg
import pytest

from consumers.topics import ensure_topics
from core.settings import Settings
from devtools.tansu import free_port, tansu_broker
from tests.consumer.histories import applied_records, assert_tables_match, caught_up, history, stream
from tests.factories import make_settings
from tests.processes import consumer_process


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


@pytest.fixture
def fault_settings(consumer_settings: Settings) -> Settings:
    # A killed member holds its partitions until its session times out: keep that short.
    return consumer_settings.model_copy(
        update={"consumer_session_timeout_ms": 1000, "consumer_heartbeat_interval_ms": 100}
    )


async def sigkills(settings: Settings, pool: asyncpg.Pool, log: Path, *, events: int, kills: int) -> None:
    documents = history(events, seed=kills)
    await ensure_topics(settings)
    streaming = asyncio.create_task(stream(settings, documents, per_second=events / 20))
    rng = random.Random(kills)
    process = consumer_process(settings, log)
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.1, 1.5))  # mid-batch, mid-join, idle: wherever it falls
        process.kill()
        process.wait()
        process = consumer_process(settings, log)
    await streaming
    try:
        await caught_up(pool, settings, len(documents))
    finally:
        assert stop(process) == 0, log.read_text()[-3000:]
    await assert_tables_match(pool, documents)


async def test_sigkill_at_random_moments_loses_and_doubles_nothing(fault_settings, pool, tmp_path):
    await sigkills(fault_settings, pool, tmp_path / "consumer.log", events=10_000, kills=20)


@pytest.mark.long
async def test_many_more_sigkills(fault_settings, pool, tmp_path):
    await sigkills(fault_settings, pool, tmp_path / "consumer.log", events=100_000, kills=150)


async def test_a_member_killed_mid_batch_hands_its_partitions_over(fault_settings, pool, tmp_path):
    documents = history(5_000, seed=7)
    await ensure_topics(fault_settings)
    log = tmp_path / "consumers.log"
    members = [consumer_process(fault_settings, log) for _ in range(2)]
    streaming = asyncio.create_task(stream(fault_settings, documents, per_second=1_000))
    while await applied_records(pool, fault_settings) < 500:
        await asyncio.sleep(0.05)
    members[0].kill()  # both hold partitions and are applying batches by now
    members[0].wait()
    await streaming
    try:
        await caught_up(pool, fault_settings, len(documents))
    finally:
        assert stop(members[1]) == 0, log.read_text()[-3000:]
    await assert_tables_match(pool, documents)


async def test_database_connections_cut_during_consumption(fault_settings, pool, tmp_path):
    documents = history(5_000, seed=11)
    await ensure_topics(fault_settings)
    log = tmp_path / "consumer.log"
    process = consumer_process(fault_settings, log)
    streaming = asyncio.create_task(stream(fault_settings, documents, per_second=1_000))
    while await applied_records(pool, fault_settings) == 0:
        await asyncio.sleep(0.05)
    cut = 0
    # The connections of batches being applied, as often as there are some, while the stream lasts
    # and until three were cut (a consumer that started late on a busy machine has had fewer).
    async with asyncio.timeout(120):
        while not streaming.done() or cut < 3:
            assert process.poll() is None, log.read_text()[-3000:]
            cut += await pool.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'commons-users-consumer' AND datname = current_database() "
                "AND state <> 'idle') t"
            )
            await asyncio.sleep(0.02)
    await streaming
    try:
        await caught_up(pool, fault_settings, len(documents))
        assert process.poll() is None  # it survived every cut
    finally:
        assert stop(process) == 0, log.read_text()[-3000:]
    assert cut >= 3 and "is read again" in log.read_text()
    await assert_tables_match(pool, documents)


def broker_settings(database_url: str, bootstrap: str, policy: str, suffix: str) -> Settings:
    return make_settings(
        database_url, kafka_bootstrap_servers=bootstrap, kafka_topic_partitions=2, consumer_offset_beyond_end=policy,
        kafka_resource_topic=f"resource-events-{suffix}", kafka_user_topic=f"user-events-{suffix}",
        kafka_consumer_group=f"group-{suffix}", consumer_session_timeout_ms=1000, consumer_heartbeat_interval_ms=100,
    )  # fmt: skip


@pytest.mark.parametrize("policy", ["replay", "fail"])
async def test_the_broker_stopped_and_restarted_empty(database_url, pool, tmp_path, policy):
    """A memory broker comes back without its topics: each stored offset lies beyond its end, and
    CONSUMER_OFFSET_BEYOND_END decides, as the README says."""
    port, log = free_port(), tmp_path / "consumer.log"
    before, after = history(40, seed=3), history(6, seed=4)
    with tansu_broker(port) as bootstrap:
        settings = broker_settings(database_url, bootstrap, policy, policy)
        await ensure_topics(settings)
        await stream(settings, before, per_second=1_000)
        process = consumer_process(settings, log)
        await caught_up(pool, settings, len(before), seconds=60)
    await asyncio.sleep(2)
    assert process.poll() is None  # it waits for the broker
    try:
        with tansu_broker(port):
            await ensure_topics(settings)
            await stream(settings, after, per_second=1_000)
            if policy == "replay":  # the new log is read from its beginning
                await caught_up(pool, settings, len(after), seconds=60)
                assert "Replaying it from its beginning" in log.read_text()
                await assert_tables_match(pool, before + after)
            else:  # it stops, says why and what to do, and applies nothing of the new log
                assert await asyncio.to_thread(process.wait, 60) == 2
                assert "CONSUMER_OFFSET_BEYOND_END=replay" in log.read_text()
                assert await applied_records(pool, settings) == len(before)
    finally:
        if process.poll() is None:
            stop(process)
