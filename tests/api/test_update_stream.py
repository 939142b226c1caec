"""The live update stream (README: "Live updates"): events as the updates change, replay after a
reconnection, its gap, the session's rules, keepalives, and the bound on what waits for a client."""

from __future__ import annotations

import asyncio
import json
from uuid import UUID

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
import pytest

from core import update_stream, updates
from service.app import create_app
from service.update_stream import HUB
from tests.factories import apply, at, deleted, imported, login, make_settings, published
from tests.metrics import Moved
from tests.sse import STREAM, Message, next_event, next_message, opened, ready

U1_STREAM = STREAM.format(user="u1")
# The listening connection of this test's API replica, cut (only this test's database's).
CUT_LISTENER = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = 'commons-users-api-stream'"
)


@pytest.fixture
async def session_id(pool):
    return await login(pool, "u1")


async def hub_caught_up(client, pool) -> None:
    """Until the replica's hub has read every change committed so far."""
    last = await pool.fetchval("SELECT max(position) FROM update_changes")
    async with asyncio.timeout(30):
        while client.app[HUB].position < last:
            await asyncio.sleep(0.01)


async def test_each_change_of_the_users_updates_is_an_event_with_a_growing_id(client, pool, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(1)))
    async with opened(client, session_id) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        live_from = (await ready(response)).position

        await apply(pool, published("r1", 2, at_time=at(10)))
        added = await next_event(response)
        shown = await client.get("/api/users/u1/updates/r1", headers={"X-Session-ID": session_id})
        assert (added.event, added.json) == ("update", await shown.json())
        assert added.position > live_from

        await apply(pool, imported("u1", "r1", "c2", at(11), version=1))  # another course to update
        changed = await next_event(response)
        assert [c["courseId"] for c in changed.json["courses"]] == ["c2", "c1"]
        assert changed.position > added.position

        ignored = await client.post("/api/users/u1/updates/r1/ignore", headers={"X-Session-ID": session_id})
        assert ignored.status == 204
        removed = await next_event(response)
        assert removed.json == {"resourceId": "r1", "removed": True}
        assert removed.position > changed.position


@pytest.mark.parametrize("how", ["imported again", "deleted"])
async def test_an_update_that_goes_away_otherwise_is_removed_too(client, pool, session_id, how):
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(1)))
    await apply(pool, published("r1", 2, at_time=at(2)))
    await hub_caught_up(client, pool)  # else a change it has not read yet comes after `ready`, live
    async with opened(client, session_id) as response:
        await ready(response)
        if how == "imported again":
            await apply(pool, imported("u1", "r1", "c1", at(3), version=2))
        else:
            await apply(pool, deleted("r1", at(3)))
        assert (await next_event(response)).json == {"resourceId": "r1", "removed": True}


async def test_a_version_published_again_under_its_number_is_an_event_once(client, pool, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(1)))
    first = published("r1", 2, at_time=at(2), eventId=str(UUID(int=1)))
    await apply(pool, first)
    await hub_caught_up(client, pool)  # else a change it has not read yet comes after `ready`, live
    async with opened(client, session_id) as response:
        await ready(response)
        again = published("r1", 2, at_time=at(2), eventId=str(UUID(int=2)), versionNotes="Corrected notes")
        await apply(pool, again)
        assert (await next_event(response)).json["versionNotes"] == "Corrected notes"
        await apply(pool, again, first)  # delivered again, or late: nothing changes, nothing is sent
        await apply(pool, imported("u1", "r1", "c2", at(3)))
        assert [c["courseId"] for c in (await next_event(response)).json["courses"]] == ["c2", "c1"]


async def test_nobody_else_gets_the_users_events(client, pool, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)), published("r2", 1, at_time=at(0)))
    async with opened(client, session_id) as response:
        await ready(response)
        await apply(pool, imported("u2", "r2", "c1", at(1)), published("r2", 2, at_time=at(2)))
        await apply(pool, imported("u1", "r1", "c1", at(3)), published("r1", 2, at_time=at(4)))
        message = await next_event(response)
        assert message.json["versionId"] == "r1-v2"


async def test_a_reconnection_gets_what_it_missed_once_per_resource(client, pool, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)), published("r2", 1, at_time=at(0)))
    async with opened(client, session_id) as response:
        last_seen = str((await ready(response)).position)
    await apply(pool, imported("u1", "r1", "c1", at(1)), imported("u1", "r2", "c1", at(1)))
    await apply(pool, published("r2", 2, at_time=at(2)))
    await apply(pool, published("r1", 2, at_time=at(3)))
    await apply(pool, published("r2", 3, at_time=at(4)))
    await hub_caught_up(client, pool)  # else a change it has not read yet comes after `ready`, live

    async with opened(client, session_id, last_seen) as response:
        first, second = await next_event(response), await next_event(response)
        assert [first.json["versionId"], second.json["versionId"]] == ["r1-v2", "r2-v3"]
        assert int(last_seen) < first.position < second.position
        live = await ready(response)
        assert live.position >= second.position

    async with opened(client, session_id, str(live.position)) as response:
        assert (await ready(response)).position == live.position  # nothing missed, nothing sent again


async def test_a_reconnection_gets_the_removals_it_missed(client, pool, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(1)))
    await apply(pool, published("r1", 2, at_time=at(2)))
    async with opened(client, session_id) as response:
        last_seen = str((await ready(response)).position)
    await updates.ignore_update(pool, "u1", "r1", None)
    await hub_caught_up(client, pool)
    async with opened(client, session_id, last_seen) as response:
        removed = await next_event(response)
        assert removed.json == {"resourceId": "r1", "removed": True}
        assert (await ready(response)).position == removed.position


async def test_a_replica_prunes_old_changes_with_no_consumer_running(pool, database_url, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(1)))
    await apply(pool, published("r1", 2, at_time=at(2)))
    await updates.ignore_update(pool, "u1", "r1", None)  # a tombstone
    await pool.execute("UPDATE update_changes SET changed_at = changed_at - interval '2 hours'")
    await pool.execute("UPDATE removed_updates SET removed_at = removed_at - interval '2 hours'")
    settings = make_settings(database_url, update_stream_retention_seconds=3600)
    async with TestClient(TestServer(create_app(settings))), asyncio.timeout(30):
        while await pool.fetchval(
            "SELECT (SELECT count(*) FROM update_changes) + (SELECT count(*) FROM removed_updates)"
        ):
            await asyncio.sleep(0.05)


async def test_a_gap_older_than_the_retention_window_says_to_reload(client, pool, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)))
    async with opened(client, session_id) as response:
        last_seen = str((await ready(response)).position)
    await apply(pool, imported("u1", "r1", "c1", at(1)), published("r1", 2, at_time=at(2)))
    assert await update_stream.prune(pool, retention_seconds=0.000001) == 1

    for position in (last_seen, "999999999999", str(2**63 - 1)):  # pruned since; or never sent by this stream
        async with opened(client, session_id, position) as response:
            gap = await next_event(response)
            assert gap.event == "gap"
            assert "reload" in gap.json["detail"]
            assert (await ready(response)).position >= 0


@pytest.mark.parametrize("value", ["", "abc", "-1", "1.5", "1 2", "١٢", str(2**63), "9" * 40, "7" * 5000])
async def test_a_malformed_last_event_id_is_refused(client, session_id, value):
    response = await client.get(U1_STREAM, headers={"X-Session-ID": session_id, "Last-Event-ID": value})
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    body = await response.json()
    assert body["errors"] == [
        {
            "field": "Last-Event-ID",
            "location": "header",
            "message": "must be the id of an event this stream sent: digits",
        }
    ]


async def test_the_session_may_come_from_the_cookie_or_the_query_as_for_an_eventsource(client, session_id):
    by_query = await client.get(U1_STREAM, params={"session-id": session_id})
    await ready(by_query)
    by_query.close()
    by_cookie = await client.get(U1_STREAM, headers={"Cookie": f"session={session_id}"})
    await ready(by_cookie)
    by_cookie.close()

    assert (await client.get(U1_STREAM)).status == 401
    other = await client.get(STREAM.format(user="u2"), headers={"X-Session-ID": session_id})
    assert other.status == 403


async def test_the_stream_closes_when_its_session_ends(client, session_id):
    async with opened(client, session_id) as response:
        await ready(response)
        logout = await client.post("/api/sessions/logout", headers={"X-Session-ID": session_id})
        assert logout.status in (200, 204)
        closed = await next_event(response)
        assert (closed.event, closed.json) == ("closed", {"reason": "session ended"})
        assert await next_message(response) is None


async def test_the_stream_closes_when_its_session_expires(client, pool, session_id):
    await pool.execute("UPDATE sessions SET expires_at = now() + interval '3 seconds'")  # room to open it
    async with opened(client, session_id) as response:
        await ready(response)
        closed = await next_event(response)
        assert closed.json == {"reason": "session expired"}
        assert await next_message(response) is None


async def test_an_idle_stream_sends_comments_to_keep_proxies_open(pool, database_url, session_id):
    settings = make_settings(database_url, update_stream_keepalive_seconds=0.2)
    server = TestServer(create_app(settings))
    async with (
        TestClient(server, cookie_jar=aiohttp.DummyCookieJar()) as client,
        opened(client, session_id) as response,
    ):
        await ready(response)
        assert await next_message(response, within=10) == Message(comment="keepalive")


async def test_a_client_that_does_not_read_is_disconnected_not_buffered_for(pool, database_url, session_id):
    """The client reads nothing while changes pile up: once the sockets' buffers are full, at most
    three events wait for it, and one more closes the stream."""
    settings = make_settings(database_url, update_stream_max_pending_events=3)
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(0)))
    long_notes = "n" * 19_000  # about 20 kB an event

    moved = Moved()  # the process's metrics: other tests closed streams too

    async def closed_as_too_slow() -> bool:
        return moved("commons_users_update_streams_closed_total", reason="too slow") > 0

    server = TestServer(create_app(settings))
    async with (
        TestClient(server, cookie_jar=aiohttp.DummyCookieJar()) as client,
        opened(client, session_id) as response,
    ):
        await ready(response)
        sent = 1
        while not await closed_as_too_slow():
            assert sent < 5000, "never closed"
            for version in range(sent + 1, sent + 51):
                await apply(pool, published("r1", version, at_time=at(version), versionNotes=long_notes))
            sent += 50
            await asyncio.sleep(0.1)
        assert await messages_until_cut_off(response) < sent - 1


async def messages_until_cut_off(response: aiohttp.ClientResponse) -> int:
    received = 0
    try:
        while await next_message(response) is not None:
            received += 1
    except aiohttp.ClientPayloadError:  # what the client had not read is gone
        return received
    raise AssertionError("the stream ended as if complete")


async def test_the_openapi_document_describes_the_stream(client):
    document = await (await client.get("/api/openapi.json")).json()
    operation = document["paths"]["/api/users/{userId}/update-stream"]["get"]
    events = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
    assert [e["properties"]["event"]["const"] for e in events] == ["update", "ready", "gap", "closed"]
    closed = events[3]["properties"]["data"]["contentSchema"]["properties"]["reason"]["enum"]
    assert closed == ["session ended", "session expired", "server shutting down", "reconnect"]  # each one sent
    assert {"name": "Last-Event-ID", "in": "header"}.items() <= next(
        p for p in operation["parameters"] if p["name"] == "Last-Event-ID"
    ).items()
    assert json.dumps(operation).count("retention") == 1


async def test_a_replica_shutting_down_says_so_and_closes_its_streams(pool, database_url, session_id):
    server = TestServer(create_app(make_settings(database_url)))
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        response = await http.get(server.make_url(U1_STREAM), headers={"X-Session-ID": session_id})
        await ready(response)
        closing = asyncio.create_task(server.close())
        closed = await next_event(response)
        assert (closed.event, closed.json) == ("closed", {"reason": "server shutting down"})
        assert await next_message(response) is None
        await closing


async def test_after_losing_its_connection_the_replica_listens_again_and_misses_nothing(client, pool, session_id):
    await apply(pool, published("r1", 1, at_time=at(0)), imported("u1", "r1", "c1", at(1)))
    async with opened(client, session_id) as first, opened(client, session_id) as second:
        await ready(first)
        await ready(second)
        assert await pool.fetchval(f"SELECT count(*) FROM ({CUT_LISTENER}) cut") == 1
        await apply(pool, published("r1", 2, at_time=at(2)))  # while nobody listens
        for response in (first, second):
            assert (await next_event(response)).json["versionId"] == "r1-v2"


async def test_a_session_ended_while_the_replica_did_not_listen_closes_its_stream(client, pool, session_id):
    async with opened(client, session_id) as response:
        await ready(response)
        await pool.execute(CUT_LISTENER)
        await pool.execute("DELETE FROM sessions")  # no notification reaches the replica
        closed = await next_event(response)
        assert closed.json == {"reason": "session ended"}
