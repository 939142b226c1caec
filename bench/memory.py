"""Memory: the consumer's and the API's resident set, sampled while they work.

    .venv/bin/python -m bench.memory [--quick]

On a migrated scratch database (20,000 resources at version 2) and a Tansu broker of its own:

(a) `consumer`: `profile.memory_events` `resource.imported` events (20,000 teachers, distinct
    imports; half of them make an available update) are produced to a topic of six partitions
    beforehand, then `commons-users consumer` applies them all, as fast as it can: its VmRSS
    (/proc/PID/status) is sampled each time about 1 % more of them is applied. The first 10 %
    are the warm-up; of the samples after it: first, last, min, max, the drift (last / first - 1)
    and how far the lowest and highest lie from the first. DESIGN §6 asks for ±10 %.
(b) `api`: `commons-users api` under wrk (`GET /api/users/{id}/updates`, 1,000 teachers with a
    session, `profile.connections` connections) for `profile.memory_seconds`, in chunks of up to
    10 s; its VmRSS is sampled after each chunk. The first chunk is the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from datetime import timedelta
import json
from pathlib import Path
import secrets
import sys
import time
from typing import Any

import asyncpg

from bench.harness import FULL, PREFIX, QUICK, WORK, Profile, drop_database, free_port, process, service_env, wrk
from bench.streams import (
    RESOURCES,
    T0,
    USERS,
    Topics,
    applied,
    consumer_process,
    create_topics,
    imported_event,
    migrated_database,
    produce,
    seed_resources,
)
from core import sessions
from devtools.tansu import tansu_broker

WARM_UP = 0.1  # of the events, or the first chunk of load
SESSION_USERS = 1000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def drift(samples_kib: list[int]) -> dict[str, Any]:
    """What the samples after the warm-up say, in MiB."""
    mib = [round(kib / 1024, 1) for kib in samples_kib]
    return {
        "samples": len(mib),
        "first_mib": mib[0],
        "last_mib": mib[-1],
        "min_mib": min(mib),
        "max_mib": max(mib),
        "drift_percent": round(100 * (mib[-1] / mib[0] - 1), 1),
        # Every sample lies between these, relative to the first.
        "lowest_percent": round(100 * (min(mib) / mib[0] - 1), 1),
        "highest_percent": round(100 * (max(mib) / mib[0] - 1), 1),
    }


def events(count: int) -> Iterator[dict[str, Any]]:
    """`count` distinct imports, teachers taking turns (as bench.ingest makes them, without repeats)."""
    for n in range(count):
        user, round_ = n % USERS, n // USERS
        resource = (user * 31 + round_ * 7919) % RESOURCES
        yield imported_event(user, resource, round_ % 3, 1 + n % 2, T0 + timedelta(seconds=n))


async def consumer_memory(database: str, bootstrap: str, count: int) -> dict[str, Any]:
    topics = Topics.fresh("bench-memory")
    await create_topics(bootstrap, topics.resource)
    produce_seconds = await produce(bootstrap, topics.resource, events(count))
    step = max(count // 100, 1)
    samples: list[int] = []
    conn = await asyncpg.connect(database)
    try:
        with consumer_process(database, bootstrap, topics) as proc:
            started, next_sample = time.perf_counter(), int(count * WARM_UP)
            while (done := (await applied(conn, topics))[1]) < count:
                if proc.poll() is not None:
                    raise RuntimeError(f"the consumer exited with status {proc.returncode}")
                if done >= next_sample:
                    samples.append(rss_kib(proc.pid))
                    next_sample = done + step
                await asyncio.sleep(0.02)
            seconds = time.perf_counter() - started
            samples.append(rss_kib(proc.pid))
    finally:
        await conn.close()
    return {
        "events": count,
        "produce_seconds": round(produce_seconds, 1),
        "seconds_from_start": round(seconds, 1),
        **drift(samples),
    }


async def sessions_file(database: str, users: int) -> Path:
    """Users u0..u{users-1} (with the imports the consumer wrote) and a session each."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            """
            INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)
            SELECT 'u' || n, 'acct-1', 'District 1', 'Teacher ' || n, 't' || n || '@example.edu', now(),
                   gen_random_uuid()
            FROM generate_series(0, $1::int - 1) AS n
            ON CONFLICT (id) DO NOTHING
            """,
            users,
        )
        lines = [f"u{n} {await sessions.open_session(conn, f'u{n}', 24 * 3600)}\n" for n in range(users)]
    finally:
        await conn.close()
    path = WORK / f"memory-sessions-{secrets.token_hex(3)}.txt"
    path.write_text("".join(lines))
    return path


async def api_memory(database: str, profile: Profile) -> dict[str, Any]:
    path = await sessions_file(database, SESSION_USERS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "service", "api", "--host", "127.0.0.1", "--port", str(port)]
    chunk = min(10.0, max(1.0, profile.memory_seconds / 10))
    loads = []
    samples: list[int] = []
    try:
        with process(command, service_env(database, LOG_LEVEL="WARNING"), ready_url=f"{base}/readyz") as proc:
            elapsed = 0.0
            while elapsed < profile.memory_seconds:
                load = await asyncio.to_thread(
                    wrk, base, "/api/users/%s/updates", path, connections=profile.connections, seconds=chunk
                )
                loads.append(load)
                elapsed += max(1, round(chunk))
                samples.append(rss_kib(proc.pid))
    finally:
        path.unlink()
    after_warm_up = samples[1:] if len(samples) > 1 else samples
    return {
        "seconds": elapsed,
        "chunk_seconds": max(1, round(chunk)),
        "requests": sum(load.requests for load in loads),
        "errors": sum(load.errors for load in loads),
        "per_second": round(sum(load.per_second for load in loads) / len(loads), 1),
        **drift(after_warm_up),
    }


async def run(profile: Profile) -> dict[str, Any]:
    WORK.mkdir(exist_ok=True)
    name = f"{PREFIX}_memory_{secrets.token_hex(3)}"
    database = await migrated_database(name)
    try:
        await seed_resources(database)
        with tansu_broker() as bootstrap:
            consumer = await consumer_memory(database, bootstrap, profile.memory_events)
        api = await api_memory(database, profile)
    finally:
        await drop_database(name)
    return {"profile": profile.name, "consumer": consumer, "api": api, "target_drift_percent": 10}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick profile (seconds)")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(QUICK if args.quick else FULL)), indent=2))


if __name__ == "__main__":
    main()
