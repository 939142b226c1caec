"""`commons-users dlq` as an operator runs it: the README's commands, on dead letters the database
refused among others, against the real broker and consumer; and what the command says when it
cannot run. (The README's examples themselves run against `make run`: tests/devtools/test_make_run.py.)"""

import asyncio
from datetime import UTC, datetime
import re
import shlex
import subprocess
import sys

import pytest

from consumers.consumer import EventConsumer
from tests.factories import published
from tests.kafka import consume_until, produce, produce_raw
from tests.metrics import APPLIED, DEAD_LETTERED, Moved
from tests.processes import environment

# The default topics, and times (with or without seconds and a Z).
DEFAULT_TOPICS = ("commons.resource-events", "commons.user-events")
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?Z?"

EXAMPLES = """
commons-users dlq list
commons-users dlq list --topic commons.resource-events --since 2026-11-28T09:00 --reason refused
commons-users dlq show commons.resource-events/0/0
commons-users dlq replay --reason "refused by the database" --dry-run
commons-users dlq replay --reason "refused by the database"
"""
SAMPLE = "\n".join(
    [
        "$ commons-users dlq list",
        "commons.resource-events/0/0 key='r-decimals' size=738 time=2026-11-28T09:12:44Z refused by the database: "
        'new row for relation "resources" violates check constraint "resources_title_check"',
        "commons.resource-events/1/1 key='r-fractions' size=56 time=2026-11-28T09:12:45Z invalid JSON (UTF-8 is "
        "required): Invalid JSON: EOF while parsing an object at line 1 column 56",
        '$ commons-users dlq replay --reason "refused by the database"',
        "replayed commons.resource-events/0/0 key='r-decimals' size=738",
        "read 2 dead letters: 1 replayed, 0 stubs not replayed, 1 left by the filters",
        "records that fail again are dead-lettered anew: commons-users dlq list --since 2026-11-28T09:14:02Z",
    ]
)


def examples() -> list[str]:
    return [shlex.join(shlex.split(line)) for line in EXAMPLES.strip().splitlines()]


def samples() -> dict[str, list[str]]:
    """Each `$ command` line of SAMPLE and the lines it printed."""
    printed: dict[str, list[str]] = {}
    for line in SAMPLE.strip().splitlines():
        if line.startswith("$ "):
            command = printed.setdefault(shlex.join(shlex.split(line[2:])), [])
        else:
            command.append(line)
    return printed


def localized(text: str, settings, since: str) -> str:
    """An example line with the test's topics and `since` for its times."""
    for default_topic, topic in zip(
        DEFAULT_TOPICS, (settings.kafka_resource_topic, settings.kafka_user_topic), strict=True
    ):
        text = text.replace(default_topic, topic)
    return re.sub(TIME, since, text)


@pytest.fixture
async def consumer(consumer_settings, pool):
    """The consumer that dead-letters and applies, in this process."""
    consumer = EventConsumer(consumer_settings, pool, member="member-1")
    await consumer.start()
    yield consumer
    await consumer.stop()


def dlq(settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "dlq", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(settings, **env),
    )


async def test_list_show_and_replay_what_the_database_refused(consumer, consumer_settings, pool):
    settings, moved = consumer_settings, Moved()
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")  # without an offset: UTC
    await pool.execute("ALTER TABLE resources ADD CONSTRAINT resources_title_check CHECK (length(title) <= 40)")
    try:
        await produce(
            settings,
            published("r-fractions", 1),
            published("r-decimals", 1, title="Decimals: place value, rounding and comparing"),
        )
        await produce_raw(settings, (b"r-fractions", b'{"type": "resource.deleted", "resourceId": "r-fractions"'))
        await consume_until(consumer, lambda: moved(DEAD_LETTERED) == 2 and moved(APPLIED) == 1)
        await pool.execute("ALTER TABLE resources DROP CONSTRAINT resources_title_check")  # the fix

        printed = {}
        for line in examples():
            words = shlex.split(localized(line, settings, since))
            assert words[:2] == ["commons-users", "dlq"]
            # In New York a UTC time read as local would be five hours later: nothing would match.
            result = await asyncio.to_thread(dlq, settings, *words[2:], TZ="America/New_York")
            assert result.returncode == 0, result.stderr
            printed[line] = result.stdout.splitlines()
        every, refused, show = (printed[example] for example in examples()[:3])
        assert refused == every[:1]  # its --since, without an offset, is read as UTC
        assert "key: 'r-decimals'" in show and show[-1].startswith('{"eventId": ')
        assert printed[examples()[-1]][0].startswith("replayed ") and result.stderr == ""  # no progress bar

        await consume_until(consumer, lambda: moved(APPLIED) == 2)
        assert await pool.fetchval("SELECT array_agg(id ORDER BY id) FROM resources") == ["r-decimals", "r-fractions"]
    finally:
        await pool.execute("ALTER TABLE resources DROP CONSTRAINT IF EXISTS resources_title_check")

    def masked(lines):
        return [re.sub(TIME, "TIME", localized(line, settings, since)) for line in lines]

    shown = samples()
    assert shown and set(shown) <= set(printed)
    for command, lines in shown.items():  # the sample output is what the command printed, but for the times
        assert masked(printed[command]) == masked(lines), command


async def test_the_command_says_why_it_cannot_run_and_exits_2(consumer_settings):
    settings = consumer_settings
    for args, message in [
        (["list", "--since", "yesterday"], "argument --since: not an ISO 8601 time: 'yesterday'"),
        (["replay", "--until", "2026-13-01"], "argument --until: not an ISO 8601 time: '2026-13-01'"),
        (["show", "r1"], "argument OFFSET: not an offset nor TOPIC/PARTITION/OFFSET: 'r1'"),
        (["list", "--topic", "other"], f"'other' is not an event topic ({settings.kafka_resource_topic}, "),
        (["show", "other/0/1"], "'other' is not an event topic"),
        (["replay", "--dry-run"], "the broker at 127.0.0.1:9 failed: KafkaConnectionError: Unable to bootstrap"),
    ]:
        result = await asyncio.to_thread(dlq, settings, *args, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9")
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


async def test_show_exits_1_when_there_is_no_such_dead_letter(consumer_settings):
    result = await asyncio.to_thread(dlq, consumer_settings, "show", "--topic", consumer_settings.kafka_user_topic, "7")
    dead_letters = f"{consumer_settings.kafka_user_topic}.dlq"
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"commons-users: the broker has no topic {dead_letters}: nothing was read there\n"
        f"commons-users: no dead letter of 7 in {dead_letters}\n"
    )
