"""Freshness: from an event produced to its effect visible in the API.

    .venv/bin/python -m bench.freshness [--quick] [--consumer-env NAME=VALUE ...]

On a migrated scratch database and a Tansu broker of its own, it starts `commons-users api` and
`commons-users consumer` as separate processes. A teacher with a session exists, and resources at
version 2 (published beforehand through the consumer's own code). A probe is one `resource.imported`
event: the teacher imports version 1 of a probe resource of its own, which makes an available
update; its latency is from just before the event is handed to the producer (linger 0, acks=all)
until `GET /api/users/{id}/updates/{resourceId}` answers 200 (polled every 2 ms, one request at a
time per probe). It also reports the consumer's batches (count and mean duration, from its
/metrics) during the steady phase.

(a) `idle`: `profile.freshness_events` probes, 0.3 s (and a little more, varied) apart, on an
    otherwise idle consumer: p50 and max;
(b) `steady`: 1,000 `resource.imported` events/s of other teachers (20,000 users and resources)
    for max(2, profile.seconds / 2) s, with a probe every 100 ms among them: p50, p99 and max, the
    rate reached, and how long the consumer took to apply the last event after it was produced.

DESIGN §6 asks for ≤ 50 ms at most when idle, and a p99 ≤ 250 ms at a steady 1,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
import contextlib
from datetime import timedelta
import json
import random
import secrets
import statistics
import sys
import time
from typing import Any
import uuid

import aiohttp
from aiokafka import AIOKafkaProducer
import asyncpg

from bench.harness import FULL, PREFIX, QUICK, WORK, Profile, drop_database, free_port, process, service_env
from bench.streams import (
    PARTITIONS,
    T0,
    Topics,
    applied,
    consumer_process,
    create_topics,
    imported_event,
    migrated_database,
    seed_resources,
)
from core import db, sessions
from core.events import EVENT_ADAPTER
from core.ingest import apply_events
from devtools.tansu import tansu_broker

TEACHER = 999_999  # the probing teacher, u999999, outside the background's users
BACKGROUND_RATE = 1000  # events/s
PROBE_EVERY = 0.1  # s, in the steady phase
# Between a probe's requests: polling without pause would load the API (and, on a small machine,
# the consumer's CPUs) with a request every millisecond or two per probe in flight.
POLL_EVERY = 0.002


def user_event(user: int) -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "type": "user.upserted",
        "occurredAt": T0.isoformat(),
        "schemaVersion": 1,
        "userId": f"u{user}",
        "accountId": "acct-1",
        "accountName": "District 1",
        "name": f"Teacher {user}",
        "email": f"t{user}@example.edu",
    }


async def prepare(database: str, resources: int) -> str:
    """Resources 0..resources-1 at version 2, the teacher, and a session for it; returns the
    session id."""
    await seed_resources(database, resources)
    conn = await asyncpg.connect(database)
    try:
        await conn.set_type_codec("jsonb", encoder=db.encode_jsonb, decoder=json.loads, schema="pg_catalog")
        async with conn.transaction():
            await apply_events(conn, [EVENT_ADAPTER.validate_python(user_event(TEACHER))])
        session: str = await sessions.open_session(conn, f"u{TEACHER}", 3600)
    finally:
        await conn.close()
    return session


def probe_event(resource: int) -> dict[str, Any]:
    """The teacher imports version 1 of a resource at version 2: an update appears."""
    return imported_event(TEACHER, resource, 0, 1, T0 + timedelta(days=1))


@contextlib.asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    sender = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await sender.start()
    try:
        yield sender
    finally:
        await sender.stop()


async def probe(sender: AIOKafkaProducer, http: aiohttp.ClientSession, base: str, topic: str, resource: int) -> float:
    """Produce one probe event; seconds until its update is visible in the API (30 at most)."""
    event = probe_event(resource)
    url = f"{base}/api/users/u{TEACHER}/updates/r{resource}"
    started = time.perf_counter()
    async with asyncio.timeout(30):
        await sender.send(topic, json.dumps(event).encode(), key=event["resourceId"].encode())
        while True:
            async with http.get(url) as response:
                await response.read()
                if response.status == 200:
                    return time.perf_counter() - started
                if response.status != 404:
                    raise RuntimeError(f"GET {url}: {response.status}")
            await asyncio.sleep(POLL_EVERY)


def summary(latencies: list[float]) -> dict[str, float]:
    ms = sorted(1000 * seconds for seconds in latencies)
    quantiles = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "probes": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(quantiles[98], 1),
        "max_ms": round(ms[-1], 1),
        "min_ms": round(ms[0], 1),
    }


async def idle_phase(
    sender: AIOKafkaProducer, http: aiohttp.ClientSession, base: str, topic: str, resources: list[int]
) -> dict[str, float]:
    rng = random.Random(1)
    latencies = []
    for resource in resources:
        await asyncio.sleep(0.3 + rng.uniform(0, 0.05))
        latencies.append(await probe(sender, http, base, topic, resource))
    return summary(latencies)


async def steady_phase(
    sender: AIOKafkaProducer,
    http: aiohttp.ClientSession,
    base: str,
    topic: str,
    seconds: float,
    probes: list[int],
    resources: int,
    users: int,
) -> dict[str, Any]:
    """Background imports at BACKGROUND_RATE, and a probe every PROBE_EVERY seconds."""
    rng = random.Random(2)
    probing: list[asyncio.Task[float]] = []
    sent, started = 0, time.perf_counter()
    last_sent: float = started
    tick = 0.01
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * BACKGROUND_RATE) - sent
        for _ in range(max(due, 0)):
            user, resource = rng.randrange(users), rng.randrange(resources)
            e = imported_event(user, resource, rng.randrange(3), rng.randint(1, 2), T0 + timedelta(seconds=sent))
            await sender.send(topic, json.dumps(e).encode(), key=e["resourceId"].encode())
            sent += 1
        last_sent = time.perf_counter()
        if len(probing) < len(probes) and elapsed >= len(probing) * PROBE_EVERY:
            probing.append(asyncio.create_task(probe(sender, http, base, topic, probes[len(probing)])))
        await asyncio.sleep(tick)
    latencies = await asyncio.gather(*probing)
    return {
        **summary(list(latencies)),
        "background_events": sent,
        "background_per_second": round(sent / (last_sent - started)),
        "seconds": round(seconds, 1),
    }


_BATCHES = "commons_users_consumer_batch_duration_seconds"


async def batches(http: aiohttp.ClientSession, health_port: int) -> tuple[float, float]:
    """The consumer's batches so far: how many, and their seconds in all (its /metrics)."""
    async with http.get(f"http://127.0.0.1:{health_port}/metrics") as response:
        text = await response.text()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (f"{_BATCHES}_count", f"{_BATCHES}_sum"):
            found[name.rsplit("_", 1)[1]] = float(value)
    return found.get("count", 0.0), found.get("sum", 0.0)


async def caught_up(database: str, topics: Topics, records: int) -> float:
    """Seconds until the group applied `records` records of the resource topic (120 at most)."""
    conn = await asyncpg.connect(database)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(120):
            while (await applied(conn, topics))[1] < records:
                await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return time.perf_counter() - started


async def run(profile: Profile, *, consumer_env: dict[str, str] | None = None) -> dict[str, Any]:
    WORK.mkdir(exist_ok=True)
    seconds = max(2.0, profile.seconds / 2)
    steady_probes = int(seconds / PROBE_EVERY) + 1
    background = 20_000 if profile is FULL else 1_000  # users and resources of the background
    # The warm-up's, the idle phase's and the steady phase's probe resources, after the background's.
    probe_resources = list(range(background, background + 1 + profile.freshness_events + steady_probes))
    warm_up, idle_resources = probe_resources[0], probe_resources[1 : 1 + profile.freshness_events]
    steady_resources = probe_resources[1 + profile.freshness_events :]
    name = f"{PREFIX}_freshness_{secrets.token_hex(3)}"
    database = await migrated_database(name)
    try:
        session = await prepare(database, probe_resources[-1] + 1)
        with tansu_broker() as bootstrap:
            topics = Topics.fresh("bench-freshness")
            await create_topics(bootstrap, topics.resource, topics.user)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            api = [sys.executable, "-m", "service", "api", "--host", "127.0.0.1", "--port", str(port)]
            health = free_port()
            settings = {"CONSUMER_HEALTH_PORT": str(health), **(consumer_env or {})}
            with (
                process(api, service_env(database, LOG_LEVEL="WARNING"), ready_url=f"{base}/readyz"),
                consumer_process(database, bootstrap, topics, **settings),
            ):
                conn = await asyncpg.connect(database)
                try:
                    while (await applied(conn, topics))[0] < PARTITIONS:  # joined, partitions claimed
                        await asyncio.sleep(0.05)
                finally:
                    await conn.close()
                headers = {"X-Session-ID": session}
                async with producer(bootstrap) as sender, aiohttp.ClientSession(headers=headers) as http:
                    await probe(sender, http, base, topics.resource, warm_up)  # connections made, plans cached
                    idle = await idle_phase(sender, http, base, topics.resource, idle_resources)
                    before = await batches(http, health)
                    steady = await steady_phase(
                        sender, http, base, topics.resource, seconds, steady_resources, background, background
                    )
                    after = await batches(http, health)
                    count = after[0] - before[0]
                    steady["consumer_batches"] = int(count)
                    steady["consumer_batch_mean_ms"] = round(1000 * (after[1] - before[1]) / count, 1) if count else 0
                    produced = 1 + len(idle_resources) + steady["probes"] + steady["background_events"]
                    steady["drained_seconds_after_last_event"] = round(await caught_up(database, topics, produced), 3)
    finally:
        await drop_database(name)
    return {
        "profile": profile.name,
        "consumer_env": consumer_env or {},
        "idle": idle,
        "steady": steady,
        "targets": {"idle_max_ms": 50, "steady_p99_ms": 250},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick profile (seconds)")
    parser.add_argument(
        "--consumer-env", nargs="*", default=[], metavar="NAME=VALUE", help="settings of the consumer process"
    )
    args = parser.parse_args(argv)
    consumer_env = dict(pair.split("=", 1) for pair in args.consumer_env)
    print(json.dumps(asyncio.run(run(QUICK if args.quick else FULL, consumer_env=consumer_env)), indent=2))


if __name__ == "__main__":
    main()
