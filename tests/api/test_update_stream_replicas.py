"""The live update stream on several API replicas (README: "Live updates"): a reconnection that
reaches a replica further behind, a listening connection lost without a word, positions that go
back, the caps on streams per user and per replica, and a session ended while a stream was being
opened. Each replica is an app of its own on the same database; a replica whose listening
connection must fail reaches PostgreSQL through a relay (tests/relay.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
import os
import secrets
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
import pytest
from redis.asyncio import Redis
from yarl import URL

from service.app import create_app
from tests.factories import apply, at, imported, login, make_settings, published
from tests.relay import Relay
from tests.sse import STREAM, Message, next_event, opened, ready

U1_STREAM = STREAM.format(user="u1")


@contextlib.asynccontextmanager
async def replica(database_url: str, **overrides: Any) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(database_url, **overrides))
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


@contextlib.asynccontextmanager
async def relayed_replica(database_url: str, **overrides: Any) -> AsyncIterator[tuple[TestClient, Relay]]:
    """A replica whose hub listens through a relay; its pool goes straight to PostgreSQL."""
    url = URL(database_url)
    async with Relay(url.host or "127.0.0.1", url.port or 5432) as relay:
        listen_url = str(url.with_port(relay.port))
        async with replica(database_url, database_listen_url=listen_url, **overrides) as client:
            yield client, relay


async def refused(response: aiohttp.ClientResponse, status: int, slug: str) -> None:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["type"] == f"urn:commons-users:problem:{slug}"


@pytest.fixture
async def session_id(pool):
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(1)))
    return await login(pool, "u1")


async def test_a_reconnection_to_a_replica_further_behind_waits_for_it_and_gets_no_gap(
    client, pool, database_url, session_id
):
    async with relayed_replica(database_url) as (behind, relay):
        async with opened(client, session_id) as first:
            await ready(first)
            relay.pause()  # the second replica hears of nothing for now
            await apply(pool, published("r1", 2, at_time=at(2)))
            seen = (await next_event(first)).position
        resuming = asyncio.get_running_loop().call_later(0.3, relay.resume)
        async with opened(behind, session_id, seen) as second:
            live = await ready(second)  # once caught up: no gap, and nothing sent twice
            assert live.position >= seen
            await apply(pool, published("r1", 3, at_time=at(3)))
            assert (await next_event(second)).json["versionId"] == "r1-v3"
        resuming.cancel()


async def test_a_replica_that_stays_behind_refuses_the_reconnection_for_now(client, pool, database_url, session_id):
    async with relayed_replica(database_url, update_stream_listen_check_seconds=1) as (behind, relay):
        async with opened(client, session_id) as first:
            await ready(first)
            relay.pause()
            await apply(pool, published("r1", 2, at_time=at(2)))
            seen = (await next_event(first)).position
        async with opened(behind, session_id, seen) as second:
            await refused(second, 503, "unavailable")
        relay.resume()


async def readiness(client: TestClient) -> int:
    async with client.get("/readyz") as response:
        return response.status


async def test_a_listening_connection_lost_without_a_word_is_noticed_and_replaced(pool, database_url, session_id):
    check = 0.5
    async with (
        relayed_replica(database_url, update_stream_listen_check_seconds=check) as (client, relay),
        opened(client, session_id) as response,
    ):
        await ready(response)
        assert relay.blackhole() == 1  # the hub's connection: the pool does not go through the relay
        await apply(pool, published("r1", 2, at_time=at(2)))
        loop = asyncio.get_running_loop()
        started = loop.time()
        while await readiness(client) == 200:
            # Noticed within two checks (1 s); the rest is room for a loaded machine's stalls.
            assert loop.time() - started < 10 * check, "the replica never noticed"
            await asyncio.sleep(0.05)
        event = await next_event(response, within=10)  # once listening again, from where it was
        assert event.json["versionId"] == "r1-v2"
        assert await readiness(client) == 200


async def test_positions_that_go_back_are_a_gap_on_every_stream(client, pool, session_id):
    async with opened(client, session_id) as response:
        await ready(response)
        await apply(pool, published("r1", 2, at_time=at(2)))
        before = (await next_event(response)).position
        # As a restore from a backup would: the last change gone, its position to be given again.
        await pool.execute("DELETE FROM update_changes WHERE position = $1", before)
        await pool.execute("SELECT setval('update_changes_position_seq', $1)", before - 1)
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'commons-users-api-stream'"
        )
        gap = await next_event(response)
        assert gap.event == "gap" and "reload" in gap.json["detail"]
        assert (await next_event(response)) == Message(event="ready", id=str(before - 1), data="{}")
        await apply(pool, published("r1", 3, at_time=at(3)))
        again = await next_event(response)
        assert (again.position, again.json["versionId"]) == (before, "r1-v3")


async def test_a_session_ended_while_its_stream_was_being_opened_is_refused(pool, database_url, session_id):
    # A stream waits as long as the check for its replica to listen: longer than a reconnection takes.
    check = 2
    async with relayed_replica(database_url, update_stream_listen_check_seconds=check) as (client, relay):
        relay.pause()
        loop = asyncio.get_running_loop()
        started = loop.time()
        while await readiness(client) == 200:
            assert loop.time() - started < 4 * check + 2, "the replica never noticed"  # 2 checks, and room
            await asyncio.sleep(0.05)
        # The session is checked, then the stream waits for the replica to listen again.
        opening = asyncio.create_task(client.get(U1_STREAM, headers={"X-Session-ID": session_id}))
        await asyncio.sleep(0.2)
        await pool.execute("DELETE FROM sessions")  # and no notification reaches the replica
        relay.resume()
        async with await opening as response:
            assert response.status == 401, await response.text()


@pytest.fixture
def redis_prefix() -> str:
    return f"test-update-streams-{secrets.token_hex(6)}:"


@pytest.fixture
async def redis_url(redis_prefix: str) -> AsyncIterator[str]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = Redis.from_url(url)
    yield url
    async for key in client.scan_iter(match=f"{redis_prefix}*"):
        await client.delete(key)
    await client.aclose()


@pytest.mark.parametrize("shared", [False, True], ids=["one replica", "two replicas sharing Redis"])
async def test_a_user_holds_at_most_the_streams_allowed(
    pool, database_url, session_id, redis_url, redis_prefix, shared
):
    settings: dict[str, Any] = {"update_stream_max_per_user": 2}
    if shared:
        settings |= {"redis_url": redis_url, "update_stream_key_prefix": redis_prefix}
    other = await login(pool, "u2")
    async with replica(database_url, **settings) as a, replica(database_url, **settings) as b:
        second_replica = b if shared else a
        async with opened(a, session_id) as first, opened(second_replica, session_id) as second:
            await ready(first)
            await ready(second)
            for where in (a, b) if shared else (a,):
                async with opened(where, session_id) as third:
                    await refused(third, 429, "too-many-streams")
            async with opened(a, other, user="u2") as others:
                await ready(others)  # another user's streams are counted apart
            await apply(pool, published("r1", 2, at_time=at(2)))
            for response in (first, second):
                assert (await next_event(response)).json["versionId"] == "r1-v2"
        async with opened(a, session_id) as once_closed:  # a stream that ends makes room
            await ready(once_closed)


async def test_a_full_replica_refuses_more_streams(pool, database_url, session_id):
    other = await login(pool, "u2")
    async with replica(database_url, update_stream_max_streams=1) as client, opened(client, session_id) as first:
        await ready(first)
        async with opened(client, other, user="u2") as second:
            await refused(second, 503, "unavailable")
        await apply(pool, published("r1", 2, at_time=at(2)))
        assert (await next_event(first)).json["versionId"] == "r1-v2"
