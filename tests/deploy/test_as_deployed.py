"""The service as production runs it: nginx terminating TLS in front of two `commons-users api`
processes, a `commons-users consumer`, the Tansu broker, PostgreSQL and Redis, all real processes
(README: "Behind a proxy", "Live updates"). Clients reach nginx from addresses of their own
(127.0.0.2, 127.0.0.3, ...), nginx reaches the API from 127.0.0.1, the one trusted proxy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
import secrets
import signal
import ssl
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis.asyncio import Redis
from yarl import URL

from core.settings import Settings
from devtools.tansu import free_port
from tests.deploy.edge import REPLICA_HEADER, client_tls, nginx
from tests.factories import imported, login, published, token
from tests.kafka import produce
from tests.metrics import scraped
from tests.processes import ServiceProcess, api_process, consumer_process, stop
from tests.relay import Relay
from tests.sse import STREAM, next_event, ready

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LIMIT = 8  # requests an hour, per user or per client address
CHECK = 1.0  # UPDATE_STREAM_LISTEN_CHECK_SECONDS
KEEPALIVE = 1.0  # UPDATE_STREAM_KEEPALIVE_SECONDS


@dataclass
class Deployment:
    base: URL  # nginx
    replicas: dict[str, int]  # name: port of its API process, reached directly
    tls: ssl.SSLContext
    listen_relay: Relay  # between replica b's hub and PostgreSQL

    @contextlib.asynccontextmanager
    async def client(self, address: str) -> AsyncIterator[aiohttp.ClientSession]:
        """A client connecting from `address` (a loopback address of its own)."""
        connector = aiohttp.TCPConnector(ssl=self.tls, local_addr=(address, 0))
        async with aiohttp.ClientSession(self.base, connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
            yield http


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"test-deployed-{secrets.token_hex(6)}:"
    yield prefix
    client = Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


@contextlib.asynccontextmanager
async def deployed(
    database_url: str, redis_prefix: str, folder: Path, consumer: Settings | None = None
) -> AsyncIterator[Deployment]:
    url = URL(database_url)
    env = {
        "TRUSTED_PROXIES": "127.0.0.1",
        "REDIS_URL": REDIS_URL,
        "REDIS_TIMEOUT_SECONDS": "5",  # as tests/factories.py: a count served late must still count
        "RATE_LIMIT_PER_HOUR": str(LIMIT),
        "RATE_LIMIT_KEY_PREFIX": f"{redis_prefix}rate-limit:",
        "UPDATE_STREAM_KEY_PREFIX": f"{redis_prefix}streams:",
        "UPDATE_STREAM_MAX_PER_USER": "2",
        "UPDATE_STREAM_MAX_STREAMS": "3",
        "UPDATE_STREAM_LISTEN_CHECK_SECONDS": str(CHECK),
        "UPDATE_STREAM_KEEPALIVE_SECONDS": str(KEEPALIVE),
    }
    ports = {"a": free_port(), "b": free_port()}
    processes: list[ServiceProcess] = []
    async with Relay(url.host or "127.0.0.1", url.port or 5432) as relay:
        listen_url = str(url.with_port(relay.port))
        try:
            for name, port in ports.items():
                own = {"DATABASE_LISTEN_URL": listen_url} if name == "b" else {}
                # In a thread: this loop serves the relay that replica b listens through meanwhile.
                processes.append(await asyncio.to_thread(api_process, database_url, port, **env, **own))
            with nginx(folder, ports) as port, consumer_running(consumer, folder):
                cert = folder / "cert.pem"
                yield Deployment(URL(f"https://127.0.0.1:{port}"), ports, client_tls(cert), relay)
        finally:
            for process in processes:
                code, _ = await asyncio.to_thread(stop, process)
                assert code == 0, process.output()


@contextlib.contextmanager
def consumer_running(settings: Settings | None, folder: Path) -> Any:
    if settings is None:
        yield
        return
    process = consumer_process(settings, folder / "consumer.log")
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def favorite(http: aiohttp.ClientSession, session_id: str, origin: str) -> int:
    headers = {"Cookie": f"session={session_id}", "Origin": origin}
    async with http.post("/api/users/u-cookie/favorites", headers=headers, json={"resourceId": "r1"}) as response:
        return response.status


async def log_in(http: aiohttp.ClientSession, **headers: str) -> int:
    body = {"jwt_token": token("u1", key="not-the-key-" + "x" * 32)}
    async with http.post("/api/sessions", json=body, headers=headers) as response:
        return response.status


async def test_the_edge_knows_each_client_and_the_origin_it_used(database_url, pool, redis_prefix, tmp_path):
    await pool.execute(
        "INSERT INTO resources (id, title, description, type, account_id, account_name, create_date, update_date,"
        " version_id, version_number, version_notes, published_at, event_id)"
        " VALUES ('r1', 'T', 'D', 'course', 'a', 'A', now(), now(), 'r1-v1', 1, '', now(), gen_random_uuid())"
    )
    session_id = await login(pool, "u-cookie")
    async with deployed(database_url, redis_prefix, tmp_path) as deployment:
        async with deployment.client("127.0.0.4") as browser:
            # A browser's cookie POST from the page's own origin, which only nginx saw.
            assert await favorite(browser, session_id, str(deployment.base)) == 201
            assert await favorite(browser, session_id, "https://elsewhere.example") == 403

        async with deployment.client("127.0.0.2") as guesser, deployment.client("127.0.0.3") as other:
            assert [await log_in(guesser) for _ in range(LIMIT + 1)] == [401] * LIMIT + [429]
            assert await log_in(other) == 401  # another client is not limited
            assert await log_in(guesser, **{"X-Forwarded-For": "198.51.100.9"}) == 429  # nginx appends the real one

        # Straight to a replica, from an address that is no trusted proxy: a forged header changes nothing.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as direct:
            for port in deployment.replicas.values():
                url = URL(f"http://127.0.0.1:{port}/api/sessions")
                async with direct.post(url, json={"jwt_token": "x"}, headers={"X-Forwarded-For": "198.51.100.9"}) as r:
                    assert r.status == 429


@contextlib.asynccontextmanager
async def stream(
    http: aiohttp.ClientSession, session_id: str, replica: str, last_event_id: int | None = None, user: str = "u1"
) -> AsyncIterator[aiohttp.ClientResponse]:
    headers = {"Cookie": f"session={session_id}", REPLICA_HEADER: replica}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    async with http.get(STREAM.format(user=user), headers=headers) as response:
        yield response


async def refused(response: aiohttp.ClientResponse, status: int) -> None:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "Retry-After" in response.headers


async def replica_read_it(pool: asyncpg.Pool, port: int, resource: str, version: int) -> None:
    """Until the consumer applied that version and the replica's hub read its change."""
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        while not await pool.fetchval(
            "SELECT EXISTS (SELECT FROM available_updates WHERE resource_id = $1 AND version_number = $2)",
            resource,
            version,
        ):
            await asyncio.sleep(0.05)
        last = await pool.fetchval("SELECT max(position) FROM update_changes")
        while True:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            if scraped(text, "commons_users_update_stream_position") >= last:
                return
            await asyncio.sleep(0.05)


async def readiness(port: int) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status


async def test_live_updates_hold_across_replicas(database_url, pool, consumer_settings, redis_prefix, tmp_path):
    sessions = {user: await login(pool, user) for user in ("u1", "u2", "u3", "u4")}
    first = published("r1", 1)
    await produce(consumer_settings, first, *(imported(user, "r1", "c1", first.published_at) for user in sessions))
    async with (
        deployed(database_url, redis_prefix, tmp_path, consumer_settings) as deployment,
        deployment.client("127.0.0.2") as http,
    ):
        # A stream on replica a, and a change it gets.
        async with stream(http, sessions["u1"], "a") as on_a:
            await ready(on_a)
            await produce(consumer_settings, published("r1", 2))
            seen = (await next_event(on_a, within=30)).position
        # Missed while away; the reconnection reaches replica b with the last id it got, once b has
        # read the change (else it would come after `ready`, live rather than replayed).
        await produce(consumer_settings, published("r1", 3))
        await replica_read_it(pool, deployment.replicas["b"], "r1", 3)
        async with stream(http, sessions["u1"], "b", seen) as on_b:
            missed = await next_event(on_b, within=30)
            assert (missed.event, missed.json["versionId"]) == ("update", "r1-v3")  # no gap, v2 not again
            live = await ready(on_b)
            assert live.position >= missed.position

            # Caps: u1's second stream (on a) is its last; a third, on either replica, is refused.
            async with stream(http, sessions["u1"], "a") as second:
                await ready(second)
                for replica in ("a", "b"):
                    async with stream(http, sessions["u1"], replica) as third:
                        await refused(third, 429)
                # Replica b holds at most three: u1's, u2's and u3's; u4's is refused there, not on a.
                async with (
                    stream(http, sessions["u2"], "b", user="u2") as u2,
                    stream(http, sessions["u3"], "b", user="u3") as u3,
                ):
                    await ready(u2)
                    await ready(u3)
                    async with stream(http, sessions["u4"], "b", user="u4") as u4:
                        await refused(u4, 503)
                    async with stream(http, sessions["u4"], "a", user="u4") as u4:
                        await ready(u4)
                    # Replica b's listening connection goes silent: it says so, listens again, and its
                    # streams get what was committed meanwhile.
                    assert deployment.listen_relay.blackhole() == 1
                    await produce(consumer_settings, published("r1", 4))
                    port_b = deployment.replicas["b"]
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    while await readiness(port_b) == 200:
                        assert loop.time() - started < 4 * CHECK + 2, "replica b never noticed"
                        await asyncio.sleep(0.1)
                    for response in (on_b, second, u2, u3):
                        event = await next_event(response, within=30)
                        assert event.json["versionId"] == "r1-v4", event
                    assert await readiness(port_b) == 200
        # Every stream closed by its client: each user's count goes back to nothing, at the latest
        # when the replica writes next (through TLS, nginx may not notice a client gone before).
        redis = Redis.from_url(REDIS_URL)
        try:
            async with asyncio.timeout(5 * KEEPALIVE):
                while any([await redis.zcard(f"{redis_prefix}streams:{user}") for user in sessions]):
                    await asyncio.sleep(0.05)
        finally:
            await redis.aclose()
        async with stream(http, sessions["u1"], "a") as response:
            await ready(response)


@pytest.mark.long
async def test_streams_miss_nothing_across_silences_and_replicas(
    database_url, pool, consumer_settings, redis_prefix, tmp_path
):
    """The longer form: rounds of a silenced listening connection on replica b, while a client
    moves between the replicas with its last id, and versions keep coming. Every version reaches
    the client once, in order; no gap."""
    rounds = 8
    session_id = await login(pool, "u1")
    first = published("r1", 1)
    await produce(consumer_settings, first, imported("u1", "r1", "c1", first.published_at))
    received: list[str] = []
    async with (
        deployed(database_url, redis_prefix, tmp_path, consumer_settings) as deployment,
        deployment.client("127.0.0.2") as http,
    ):
        last: int | None = None
        for version in range(2, 2 + rounds):
            replica = "ab"[version % 2]
            async with stream(http, session_id, replica, last) as response:
                assert response.status == 200, await response.text()
                if replica == "b":
                    deployment.listen_relay.blackhole()
                await produce(consumer_settings, published("r1", version))
                while True:
                    event = await next_event(response, within=60)
                    assert event.event != "gap", event
                    last = event.position
                    if event.event == "update":
                        received.append(event.json["versionId"])
                        if event.json["versionId"] == f"r1-v{version}":
                            break
    assert received == [f"r1-v{version}" for version in range(2, 2 + rounds)]
