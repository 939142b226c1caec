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
    users imported, each less the CPU time of as long at rest: nobody else costs anything.
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
from bench.dataset import SESSION_HASH_SQL, session_id
from bench.fanout import IMPORTERS, version_event
from bench.memory import rss_kib
from core import db, ingest
from core.events import EVENT_ADAPTER

WATCHED, UNWATCHED = "r-watched", "r-unwatched"
_OPENING_AT_ONCE = 100
_SETTLE_SECONDS = 1.0
_CPU_WINDOW_SECONDS = 3.0

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
        await connection.execute(_WATCHERS, watchers)
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


class Stream:
    """One client's stream, over a socket of its own, read only when told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base: URL, user: int) -> Stream:
        reader, writer = await asyncio.open_connection(base.host, base.port)
        writer.write(
            f"GET /api/users/fan-{user}/update-stream HTTP/1.1\r\nHost: {base.host}\r\n"
            f"X-Session-ID: {session_id(user)}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"stream of fan-{user}: {head.splitlines()[0]!r}")
        await reader.readuntil(b"event: ready\n")
        return cls(reader, writer)

    async def update_at(self) -> float:
        """When its next update event arrived."""
        await self.reader.readuntil(b"event: update\n")
        return time.perf_counter()

    def close(self) -> None:
        self.writer.close()


async def open_streams(base: URL, users: range) -> list[Stream]:
    slots = asyncio.Semaphore(_OPENING_AT_ONCE)

    async def one(user: int) -> Stream:
        async with slots:
            return await Stream.open(base, user)

    return await asyncio.gather(*(one(user) for user in users))


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


async def measure(database: str, server: harness.Server, watchers: int) -> dict[str, Any]:
    base = URL(server.url)
    idle = {"rss_mib_no_stream": await rss_mib(server.pid)}
    streams = await open_streams(base, range(1, watchers // 2 + 1))
    idle[f"rss_mib_{len(streams)}_streams"] = await rss_mib(server.pid)
    streams += await open_streams(base, range(watchers // 2 + 1, watchers + 1))
    idle[f"rss_mib_{len(streams)}_streams"] = await rss_mib(server.pid)
    grown = idle[f"rss_mib_{len(streams)}_streams"] - idle["rss_mib_no_stream"]
    idle["kib_per_stream"] = round(grown * 1024 / len(streams), 1)
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
    finally:
        for stream in streams:
            stream.close()
    return {
        "idle": idle,
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
    name = f"bench_update_stream_{profile.name}"
    database = await harness.create_database(name)
    try:
        await prepare(database, profile.fanout_importers, profile.idle_streams)
        with harness.api_server(harness.ROOT / ".venv/bin/python", database) as server:
            figures = await measure(database, server, profile.idle_streams)
        return {"importers of each resource": profile.fanout_importers, **figures}
    finally:
        await harness.drop_database(name)


if __name__ == "__main__":
    harness.main(run, __doc__)
