"""The live update stream (README "Live updates") held by one API process.

    .venv/bin/python -m bench.update_stream [--quick]

`fanout_importers` users imported the resource `r-watched`, and as many others `r-unwatched`; the
first `idle_streams` of the former open a stream each (10,000 and 100,000 in the full profile).
Against `commons-users api` in a process of its own, from clients in this one:

(a) `idle`: the API's resident set (VmRSS) with no stream, then with half and all of the streams
    open and idle, and what one stream costs;
(b) `watched`: version 2 of r-watched is committed (as the consumer would, in one transaction):
    seconds from the commit until each stream has its event (first, median, p99, last), and the
    latency of `GET /readyz` (a database round trip) sampled every 10 ms meanwhile (for a second
    at least), beside its latency at rest: the API does not stall while it hands out the events;
(c) the API's CPU time from (b)'s commit until a second after the last event (the probes of (b)
    included), and in the 3 s after the same commit for r-unwatched, which none of the streams'
    users imported, each less the CPU time of as long at rest: nobody else costs anything;
(d) `cap`: UPDATE_STREAM_MAX_STREAMS is `idle_streams`: (a)'s resident set with every stream open
    is what the replica's cap costs; the status of one stream more;
(e) `burst`: 100 changes naming `fanout_importers` users each (none connected), committed at once
    as the refresh stages them: the API's resident set before, at its highest and after, and
    `GET /readyz` every 10 ms until the hub has handed them all over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
import os
from pathlib import Path
import statistics
import time
from typing import Any

import aiohttp
import asyncpg
from yarl import URL

from bench import harness
from bench.dataset import SESSION_HASH_SQL
from bench.fanout import IMPORTERS, version_event
from bench.memory import rss_kib
from bench.stream_clients import Stream, open_streams
from core import db, ingest
from core.events import EVENT_ADAPTER
from core.updates import CHANGE_CHUNK_USERS

WATCHED, UNWATCHED = "r-watched", "r-unwatched"
_SETTLE_SECONDS = 1.0
_CPU_WINDOW_SECONDS = 3.0
BURST_CHANGES = 100
_POSITION = "commons_users_update_stream_position"

# $1 changes naming $3 users each (burst-N: nobody connected), in chunks of $2; numbered at commit.
_BURST = """
INSERT INTO update_changes (resource_id, chunk, user_ids, user_count)
SELECT 'burst-r' || r, c, ids, cardinality(ids)
FROM generate_series(1, $1::int) AS r, generate_series(0, ($3::int - 1) / $2::int) AS c,
     LATERAL (SELECT ARRAY(SELECT 'burst-' || n FROM generate_series(c * $2 + 1, least((c + 1) * $2, $3)) AS n))
         AS a(ids)
"""

# The first `$1` watchers, each with a session (bench/dataset.py's ids).
_WATCHERS = f"""
WITH u AS (
    INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)
    SELECT 'fan-' || n, 'acct-1', 'District', 'Teacher ' || n, 't' || n || '@example.edu', now(), gen_random_uuid()
    FROM generate_series(1, $1::int) AS n
    RETURNING id
)
INSERT INTO sessions (id_hash, user_id, expires_at)
SELECT {SESSION_HASH_SQL.replace(":n", "split_part(id, '-', 2)")}, id, now() + interval '1 day' FROM u
"""


async def publish(database: str, resource: str, version: int) -> None:
    """Commit a version of the resource as the consumer would: one transaction."""
    pool = await db.create_pool(database, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection, connection.transaction():
            await ingest.apply_events(connection, [EVENT_ADAPTER.validate_python(version_event(version, resource))])
    finally:
        await pool.close()


async def prepare(database: str, importers: int, watchers: int) -> None:
    db.migrate(database)
    for resource in (WATCHED, UNWATCHED):
        await publish(database, resource, 1)
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(IMPORTERS, importers, WATCHED, "fan")
        await connection.execute(IMPORTERS, importers, UNWATCHED, "other")
        await connection.execute(_WATCHERS, watchers + 1)  # one more, for the stream past the cap
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def rss_mib(pid: int) -> float:
    await asyncio.sleep(_SETTLE_SECONDS)
    return round(rss_kib(pid) / 1024, 1)


async def probe(http: aiohttp.ClientSession, url: str, until: Awaitable[object], at_least: float = 0) -> list[float]:
    """Latencies (ms) of GET url, one every 10 ms, until `until` is done and `at_least` seconds passed."""
    task = asyncio.ensure_future(until)
    latencies = []
    deadline = time.perf_counter() + at_least
    while not task.done() or time.perf_counter() < deadline:
        started = time.perf_counter()
        async with http.get(url) as response:
            await response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.01)
    await task
    return latencies


def summary_ms(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "samples": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


class CpuClock:
    """The API process's CPU seconds over a span, less what it spends at rest in as long."""

    def __init__(self, pid: int, at_rest_per_second: float = 0.0) -> None:
        self.pid, self.at_rest_per_second = pid, at_rest_per_second
        self.cpu, self.wall = cpu_seconds(pid), time.perf_counter()

    def spent(self) -> float:
        wall = time.perf_counter() - self.wall
        return round(cpu_seconds(self.pid) - self.cpu - self.at_rest_per_second * wall, 3)


async def handed_over(http: aiohttp.ClientSession, server: harness.Server, position: int) -> int:
    """Once the hub has handed over every change up to `position`: the API's highest resident set
    (KiB) meanwhile. Its /metrics is read five times a second: with 10,000 sockets open, its
    process collector (which counts them) would weigh on the API more than what is measured."""
    highest = 0
    while True:
        highest = max(highest, rss_kib(server.pid))
        async with http.get(f"{server.url}/metrics") as response:
            text = await response.text()
        [value] = [line.split()[1] for line in text.splitlines() if line.startswith(f"{_POSITION} ")]
        if int(float(value)) >= position:
            return highest
        await asyncio.sleep(0.2)


async def measure_burst(
    http: aiohttp.ClientSession, database: str, server: harness.Server, importers: int
) -> dict[str, Any]:
    """(e): the API's memory and `/readyz` while its hub reads BURST_CHANGES changes of `importers`
    users each, committed at once."""
    before = await rss_mib(server.pid)
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(_BURST, BURST_CHANGES, CHANGE_CHUNK_USERS, importers)
        last = await connection.fetchval("SELECT max(position) FROM update_changes")
    finally:
        await connection.close()
    committed = time.perf_counter()
    watching = asyncio.ensure_future(handed_over(http, server, last))
    latencies = await probe(http, f"{server.url}/readyz", watching)
    return {
        "changes": BURST_CHANGES,
        "users_each": importers,
        "seconds_until_handed_over": round(time.perf_counter() - committed, 2),
        "rss_mib_before": before,
        "rss_mib_highest": round(watching.result() / 1024, 1),
        "rss_mib_after": await rss_mib(server.pid),
        "readyz": summary_ms(latencies),
    }


async def measure(database: str, server: harness.Server, watchers: int, importers: int) -> dict[str, Any]:
    base = URL(server.url)
    idle = {"rss_mib_no_stream": await rss_mib(server.pid)}
    streams = await open_streams(base, range(1, watchers // 2 + 1))
    idle[f"rss_mib_{len(streams)}_streams"] = await rss_mib(server.pid)
    streams += await open_streams(base, range(watchers // 2 + 1, watchers + 1))
    idle[f"rss_mib_{len(streams)}_streams"] = await rss_mib(server.pid)
    grown = idle[f"rss_mib_{len(streams)}_streams"] - idle["rss_mib_no_stream"]
    idle["kib_per_stream"] = round(grown * 1024 / len(streams), 1)
    cap = {"streams": watchers, "rss_mib_at_the_cap": idle[f"rss_mib_{len(streams)}_streams"], "one_more": "200"}
    try:
        (await Stream.open(base, watchers + 1)).close()
    except RuntimeError as refused:
        cap["one_more"] = str(refused)  # the status line
    try:
        async with aiohttp.ClientSession() as http:
            readyz = f"{server.url}/readyz"
            at_rest = await probe(http, readyz, asyncio.sleep(_CPU_WINDOW_SECONDS))
            clock = CpuClock(server.pid)
            await asyncio.sleep(_CPU_WINDOW_SECONDS)
            rest_per_second = clock.spent() / _CPU_WINDOW_SECONDS

            arrivals = [asyncio.ensure_future(stream.update_at()) for stream in streams]
            clock = CpuClock(server.pid, rest_per_second)
            await publish(database, WATCHED, 2)
            committed = time.perf_counter()
            during = await probe(http, readyz, asyncio.wait_for(asyncio.gather(*arrivals), 120), at_least=1)
            seconds = sorted(max(0.0, arrival.result() - committed) for arrival in arrivals)
            await asyncio.sleep(_SETTLE_SECONDS)
            watched_cpu = clock.spent()

            clock = CpuClock(server.pid, rest_per_second)
            await publish(database, UNWATCHED, 2)
            await asyncio.sleep(_CPU_WINDOW_SECONDS)
            unwatched_cpu = clock.spent()

            burst = await measure_burst(http, database, server, importers)
    finally:
        for stream in streams:
            stream.close()
    return {
        "idle": idle,
        "cap": cap,
        "burst": burst,
        "watched": {
            "streams": len(seconds),
            "first_s": round(seconds[0], 3),
            "median_s": round(statistics.median(seconds), 3),
            "p99_s": round(seconds[max(0, int(len(seconds) * 0.99) - 1)], 3),
            "last_s": round(seconds[-1], 3),
        },
        "readyz at rest": summary_ms(at_rest),
        "readyz while the events go out": summary_ms(during),
        "api cpu seconds beyond rest": {
            "r-watched: its importers' streams get their events": watched_cpu,
            "r-unwatched: no stream of its importers": unwatched_cpu,
        },
    }


async def run(profile: harness.Profile) -> dict[str, Any]:
    name = f"{harness.PREFIX}_update_stream_{profile.name}"
    database = await harness.create_database(name)
    try:
        await prepare(database, profile.fanout_importers, profile.idle_streams)
        cap = str(profile.idle_streams)
        python = harness.ROOT / ".venv/bin/python"
        with harness.api_server(python, database, UPDATE_STREAM_MAX_STREAMS=cap) as server:
            figures = await measure(database, server, profile.idle_streams, profile.fanout_importers)
        return {"importers of each resource": profile.fanout_importers, **figures}
    finally:
        await harness.drop_database(name)


if __name__ == "__main__":
    harness.main(run, __doc__)
