"""Reads on real streaming replicas (tests/cluster.py): they go to a replica, which may lag behind
what others wrote; never behind what the user wrote, whatever API process the user reaches next; a
replica stopped costs no error, and serves again once back; one too far behind is skipped.

The lagging replica applies each commit APPLY_DELAY seconds late, so that a read made at once
after a write would miss it there; where a test must be sure that it has not applied a write yet,
however slow the machine, its replay is paused meanwhile.
README: "Read replicas and a connection pooler"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
import contextlib
import itertools
import math
import os
import secrets
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
import asyncpg
import pytest
from redis.asyncio import Redis

from core import db
from core.settings import Settings
from service.app import create_app
from service.keys import DATABASES
from tests.cluster import Replicated, Server
from tests.factories import (
    REDIS_PREFIX,
    TOPOLOGIES,
    add_favorite,
    add_import,
    add_resource,
    at,
    empty_tables,
    login,
    make_settings,
    token,
)
from tests.metrics import Moved

READS = "commons_users_db_reads_total"


@pytest.fixture(scope="module")
def database(postgres_cluster: Replicated) -> str:
    """A migrated database of this module's own on the cluster; its primary's URL."""
    name = f"commons_users_replicas_{secrets.token_hex(4)}"
    postgres_cluster.cluster.create_database(name)
    url = postgres_cluster.primary.url(name)
    db.migrate(url)
    return url


@pytest.fixture
async def primary(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database, min_size=1, max_size=4)
    await empty_tables(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    yield url
    client = Redis.from_url(url)
    async for key in client.scan_iter(match=f"{REDIS_PREFIX}written:*"):
        await client.delete(key)
    await client.aclose()


def settings_with(database: str, replica: Server, **overrides: Any) -> Settings:
    name = database.rsplit("/", 1)[1]
    defaults = {"database_replica_check_seconds": 0.1, "database_replica_max_lag_seconds": 60}
    return make_settings(database, database_replica_urls=[replica.url(name)], **{**defaults, **overrides})


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings)), cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


async def until(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {seconds} s"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def replay_paused(standby: Server) -> Iterator[None]:
    """`standby` applies nothing more meanwhile, and catches up after."""
    standby.sql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        standby.sql("SELECT pg_wal_replay_resume()")


def replica_serves(client: TestClient) -> Callable[[], bool]:
    return lambda: all(math.isfinite(replica.lag) for replica in client.app[DATABASES].replicas)


async def get(client: TestClient, path: str, session: str) -> tuple[int, Any]:
    async with client.get(path, headers={"X-Session-ID": session}) as response:
        return response.status, await response.json()


async def favorites(client: TestClient, session: str, user: str = "u1") -> list[str]:
    status, body = await get(client, f"/api/users/{user}/favorites", session)
    assert status == 200, body
    return [item["id"] for item in body["items"]]


async def resource_and_session(postgres_cluster: Replicated, primary: asyncpg.Pool) -> str:
    """Resource r1 and a session of u1, on the lagging replica too; the session's id."""
    await add_resource(primary, "r1")
    session = await login(primary, "u1")
    postgres_cluster.cluster.wait_replayed(postgres_cluster.delayed)
    return session


async def test_the_suite_reads_on_the_replica_in_its_replicas_run(
    client: TestClient, pool: asyncpg.Pool, database_url: str
) -> None:
    """tests/api/conftest.py: a topology that silently read the primary would prove nothing."""
    session = await login(pool, "u1")
    await until(replica_serves(client), "serving from the replica")
    moved = Moved()
    assert await favorites(client, session) == []
    replicated = bool(client.app[DATABASES].replicas)
    assert replicated == (database_url in TOPOLOGIES)
    assert moved(READS, target="replica" if replicated else "primary") == 1


async def test_reads_go_to_the_replica_which_may_lag_behind_what_others_wrote(
    postgres_cluster: Replicated, database: str, primary: asyncpg.Pool
) -> None:
    session = await resource_and_session(postgres_cluster, primary)
    async with serve(settings_with(database, postgres_cluster.delayed)) as client:
        await until(replica_serves(client), "serving from the replica")
        with replay_paused(postgres_cluster.delayed):
            await add_favorite(primary, "u1", "r1", at(1))  # not the user's write through the API: nothing to honour
            moved = Moved()
            assert await favorites(client, session) == []  # the replica has not applied it yet
            assert moved(READS, target="replica") == 1  # the list, checking the session in its statement
        postgres_cluster.cluster.wait_replayed(postgres_cluster.delayed)
        assert await favorites(client, session) == ["r1"]


@pytest.mark.parametrize("store", ["in the process", "in Redis", "Redis out of reach"])
async def test_a_user_reads_each_of_their_writes_at_once(
    postgres_cluster: Replicated, database: str, primary: asyncpg.Pool, store: str, redis_url: str
) -> None:
    """Against the lagging replica: each write endpoint, then a read that shows it, on another API
    process when Redis carries the positions."""
    await add_resource(primary, "r1", version=2)
    for course in ("c1", "c2"):
        await add_import(primary, "u1", "r1", course, at(1))
    postgres_cluster.cluster.wait_replayed(postgres_cluster.delayed)
    shared = {
        "in the process": {},
        "in Redis": {"redis_url": redis_url},
        "Redis out of reach": {"redis_url": "redis://127.0.0.1:1/0"},
    }[store]
    settings = settings_with(database, postgres_cluster.delayed, **shared)
    async with serve(settings) as writer, serve(settings) as other:
        reader = writer if store == "in the process" else other
        for client in (writer, reader):
            await until(replica_serves(client), "serving from the replica")
        with replay_paused(postgres_cluster.delayed):  # however slow the machine, none of the writes is there
            moved = Moved()

            async with writer.post("/api/sessions", json={"jwt_token": token("u1")}) as response:
                assert response.status == 201
                session = (await response.json())["sessionId"]
            assert (await get(reader, f"/api/sessions/{session}", session))[0] == 200

            async with writer.post(
                "/api/users/u1/favorites", json={"resourceId": "r1"}, headers={"X-Session-ID": session}
            ):
                pass
            assert await favorites(reader, session) == ["r1"]

            path = "/api/users/u1/updates/r1/ignore"
            async with writer.post(path, json={"courseIds": ["c1"]}, headers={"X-Session-ID": session}) as response:
                assert response.status == 204
            status, update = await get(reader, "/api/users/u1/updates/r1", session)
            assert status == 200 and [course["courseId"] for course in update["courses"]] == ["c2"], update

            async with writer.delete("/api/users/u1/favorites/r1", headers={"X-Session-ID": session}) as response:
                assert response.status == 204
            assert await favorites(reader, session) == []

            async with writer.post("/api/sessions/logout", headers={"X-Session-ID": session}) as response:
                assert response.status == 204
            assert (await get(reader, f"/api/sessions/{session}", session))[0] == 401

            # Each read above (five, and the sessions' lookups by four writes) went to the primary: the
            # replica had not applied the write before it.
            assert (moved(READS, target="replica"), moved(READS, target="primary")) == (0, 9)
        if store != "Redis out of reach":
            # Once the replica has applied them, the user's reads go back to it.
            session = await login(primary, "u2")
            postgres_cluster.cluster.wait_replayed(postgres_cluster.delayed)
            await until(lambda: reader.app[DATABASES].replicas[0].lag == 0, "the replica caught up")
            assert await favorites(reader, session, "u2") == []
            assert moved(READS, target="replica") == 1


async def test_a_replica_stopped_costs_no_error_and_serves_again_once_back(
    postgres_cluster: Replicated, database: str, primary: asyncpg.Pool
) -> None:
    spare = postgres_cluster.cluster.standbys.get("spare") or postgres_cluster.cluster.standby("spare")
    await add_resource(primary, "r1")
    session = await login(primary, "u1")
    await add_favorite(primary, "u1", "r1", at(1))
    postgres_cluster.cluster.wait_replayed(spare)
    async with serve(settings_with(database, spare)) as client:
        await until(replica_serves(client), "serving from the replica")
        stopping = asyncio.create_task(asyncio.to_thread(spare.stop))
        moved = Moved()
        while not stopping.done():
            lists = await asyncio.gather(*(favorites(client, session) for _ in range(8)))
            assert lists == [["r1"]] * 8
        await stopping
        served = moved(READS, target="replica")
        for _ in range(20):
            assert await favorites(client, session) == ["r1"]
        assert moved(READS, target="replica") == served  # skipped while down
        await asyncio.to_thread(spare.start)
        await until(replica_serves(client), "serving from the replica again")
        assert await favorites(client, session) == ["r1"]
        assert moved(READS, target="replica") > served


async def test_a_replica_too_far_behind_is_skipped_until_it_catches_up(
    postgres_cluster: Replicated, database: str, primary: asyncpg.Pool
) -> None:
    session = await resource_and_session(postgres_cluster, primary)
    settings = settings_with(database, postgres_cluster.delayed, database_replica_max_lag_seconds=0.5)
    async with serve(settings) as client:
        await until(replica_serves(client), "serving from the replica")
        replica = client.app[DATABASES].replicas[0]
        await asyncio.sleep(0.6)  # its last transaction grows old, while it has applied all there is
        with replay_paused(postgres_cluster.delayed):
            await add_favorite(primary, "u1", "r1", at(1))
            await until(lambda: replica.lag > 0.5, "skipped")
            moved = Moved()
            assert await favorites(client, session) == ["r1"]  # from the primary
            assert (moved(READS, target="primary"), moved(READS, target="replica")) == (1, 0)
        await until(lambda: replica.lag == 0, "caught up", seconds=postgres_cluster.apply_delay + 10)
        assert await favorites(client, session) == ["r1"]
        assert moved(READS, target="replica") == 1


@pytest.mark.long
async def test_reads_and_writes_hold_while_a_replica_goes_down_and_up_again_and_again(
    postgres_cluster: Replicated, database: str, primary: asyncpg.Pool
) -> None:
    """The longer form: users add and remove favorites and read them back at once, without a pause,
    and another reads what it holds, while the replica is stopped and started five times. No error,
    and no read misses a write."""
    spare = postgres_cluster.cluster.standbys.get("spare") or postgres_cluster.cluster.standby("spare")
    resources = [f"r{n}" for n in range(5)]
    for resource in resources:
        await add_resource(primary, resource)
    sessions = {user: await login(primary, user) for user in ("u1", "u2", "u3")}
    reader = await login(primary, "u4")
    await add_favorite(primary, "u4", "r0", at(1))
    postgres_cluster.cluster.wait_replayed(spare)
    async with serve(settings_with(database, spare)) as client:
        await until(replica_serves(client), "serving from the replica")
        moved = Moved()
        done = asyncio.Event()

        async def user(user_id: str, session: str) -> None:
            held: set[str] = set()
            for turn in itertools.count():
                resource = resources[turn % len(resources)]
                headers = {"X-Session-ID": session}
                if resource in held:
                    async with client.delete(f"/api/users/{user_id}/favorites/{resource}", headers=headers) as response:
                        assert response.status == 204
                    held.discard(resource)
                else:
                    body = {"resourceId": resource}
                    async with client.post(f"/api/users/{user_id}/favorites", json=body, headers=headers) as response:
                        assert response.status == 201
                    held.add(resource)
                assert set(await favorites(client, session, user_id)) == held
                if done.is_set():
                    return

        async def read() -> None:
            while not done.is_set():
                assert await favorites(client, reader, "u4") == ["r0"]

        users = [asyncio.create_task(user(user_id, session)) for user_id, session in sessions.items()]
        users.append(asyncio.create_task(read()))
        for _ in range(5):
            await asyncio.to_thread(spare.stop)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(spare.start)
            await until(replica_serves(client), "serving from the replica again")
            await asyncio.sleep(0.5)
        done.set()
        await asyncio.gather(*users)
        assert moved(READS, target="replica") > 0
