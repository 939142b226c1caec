"""The per-user rate limit over real HTTP: the RateLimit fields, the 429 past the limit, who is
counted apart, replicas sharing the count in Redis (or not, without it), the routes never limited,
and the API serving on when Redis is unreachable or hangs. Redis is the real one at REDIS_URL
(default 127.0.0.1:6379); each test counts under keys of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
import pytest
from redis.asyncio import Redis
from yarl import URL

from core.settings import Settings
from service import ratelimit, redis_store
from service.app import create_app
from tests.factories import login, make_settings, token
from tests.metrics import Moved

LIMIT = 3
POLICY = f'"hourly";q={LIMIT};w=3600'
STORE_ERRORS = "commons_users_rate_limit_store_errors_total"
RATELIMIT = re.compile(r'"hourly";r=(\d+);t=(\d+)')


@pytest.fixture
async def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = Redis.from_url(url)
    try:
        await client.ping()
    except Exception as exc:
        pytest.fail(f"these tests need Redis at REDIS_URL ({url}): {exc}")
    finally:
        await client.aclose()
    return url


@pytest.fixture
def key_prefix() -> str:
    return f"test-rate-limit-{secrets.token_hex(6)}:"


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[Redis]:
    """A client of the tests' Redis; this test's keys are deleted afterwards."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    async for key in client.scan_iter(match=f"{key_prefix}*"):
        await client.delete(key)
    await client.aclose()


def limited(database_url: str, key_prefix: str, **overrides: Any) -> Settings:
    return make_settings(database_url, rate_limit_per_hour=LIMIT, rate_limit_key_prefix=key_prefix, **overrides)


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[TestClient]:
    app = create_app(settings)
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


async def updates(client: TestClient, session: str, user_id: str) -> aiohttp.ClientResponse:
    async with client.get(f"/api/users/{user_id}/updates", headers={"X-Session-ID": session}) as response:
        await response.read()
        return response


def remaining(response: aiohttp.ClientResponse) -> tuple[int, int]:
    """The `r` and `t` of a RateLimit field."""
    match = RATELIMIT.fullmatch(response.headers["RateLimit"])
    assert match, response.headers["RateLimit"]
    return int(match[1]), int(match[2])


@pytest.fixture(params=["in-process", "redis"])
def settings_of_each_store(request, database_url, key_prefix) -> Settings:
    if request.param == "redis":
        request.getfixturevalue("redis")
        return limited(database_url, key_prefix, redis_url=request.getfixturevalue("redis_url"))
    return limited(database_url, key_prefix)


async def test_every_answer_of_a_limited_route_carries_the_fields(pool, settings_of_each_store):
    session = await login(pool, "u1")
    async with serve(settings_of_each_store) as client:
        for expected in (2, 1, 0):
            response = await updates(client, session, "u1")
            assert response.status == 200
            assert response.headers["RateLimit-Policy"] == POLICY
            r, t = remaining(response)
            assert r == expected and 3590 < t <= 3600
        response = await updates(client, session, "u2")  # refused answers count, and say so too
        assert response.status == 429
        assert response.headers["RateLimit-Policy"] == POLICY


async def test_past_the_limit_the_answer_is_429_with_retry_after(pool, settings_of_each_store):
    session = await login(pool, "u1")
    async with serve(settings_of_each_store) as client:
        statuses = [(await updates(client, session, "u1")).status for _ in range(LIMIT)]
        assert statuses == [200] * LIMIT
        for _ in range(2):
            async with client.get("/api/users/u1/updates", headers={"X-Session-ID": session}) as response:
                assert response.status == 429
                assert response.content_type == "application/problem+json"
                problem = await response.json()
            assert problem["type"] == "urn:commons-users:problem:rate-limited"
            assert problem["status"] == 429 and problem["title"] == "Too Many Requests"
            r, t = remaining(response)
            assert r == 0
            assert response.headers["Retry-After"] == str(t)
            assert response.headers["RateLimit-Policy"] == POLICY


async def test_problems_raised_by_handlers_carry_the_fields(client, pool):
    session = await login(pool, "u1")
    response = await updates(client, session, "someone-else")
    assert response.status == 403
    assert response.headers["RateLimit-Policy"] == '"hourly";q=2500;w=3600'  # the default
    assert remaining(response)[0] == 2499


async def test_users_are_counted_apart(pool, database_url, key_prefix, redis_url, redis):
    first, second = await login(pool, "u1"), await login(pool, "u2")
    async with serve(limited(database_url, key_prefix, redis_url=redis_url)) as client:
        for _ in range(LIMIT):
            await updates(client, first, "u1")
        assert (await updates(client, first, "u1")).status == 429
        response = await updates(client, second, "u2")
        assert response.status == 200 and remaining(response)[0] == LIMIT - 1
        # Two sessions of one user share the user's count.
        assert (await updates(client, await login(pool, "u1"), "u1")).status == 429


async def test_sign_in_is_limited_per_client_address(pool, database_url, key_prefix, redis_url, redis):
    session = await login(pool, "u1")
    async with serve(limited(database_url, key_prefix, redis_url=redis_url)) as client:
        statuses = []
        for body in ({"jwt_token": token("u2")}, {"jwt_token": "not-a-token"}, {"jwt_token": token("u3")}):
            async with client.post("/api/sessions", json=body) as response:
                statuses.append(response.status)
                assert response.headers["RateLimit-Policy"] == POLICY
        assert statuses == [201, 401, 201]  # refused tokens count: the limit slows guessing
        async with client.post("/api/sessions", json={"jwt_token": token("u4")}) as response:
            assert response.status == 429
            assert (await response.json())["type"] == "urn:commons-users:problem:rate-limited"
        # The address's count is not a user's.
        response = await updates(client, session, "u1")
        assert response.status == 200 and remaining(response)[0] == LIMIT - 1
        assert await redis.exists(f"{key_prefix}address:127.0.0.1", f"{key_prefix}user:u1") == 2


async def test_replicas_share_the_count_in_redis(pool, database_url, key_prefix, redis_url, redis):
    session = await login(pool, "u1")
    settings = limited(database_url, key_prefix, redis_url=redis_url)
    async with serve(settings) as one, serve(settings) as other:
        statuses = [(await updates(replica, session, "u1")).status for replica in (one, other, one, other)]
    assert statuses == [200, 200, 200, 429]


async def test_without_redis_each_process_counts_alone(pool, database_url, key_prefix):
    session = await login(pool, "u1")
    settings = limited(database_url, key_prefix)
    async with serve(settings) as one, serve(settings) as other:
        assert [(await updates(one, session, "u1")).status for _ in range(LIMIT)] == [200] * LIMIT
        assert [(await updates(other, session, "u1")).status for _ in range(LIMIT)] == [200] * LIMIT
        assert (await updates(one, session, "u1")).status == 429


async def test_redis_counters_expire_with_their_window(pool, database_url, key_prefix, redis_url, redis):
    session = await login(pool, "u1")
    async with serve(limited(database_url, key_prefix, redis_url=redis_url)) as client:
        await updates(client, session, "u1")
        await updates(client, session, "u1")
    key = f"{key_prefix}user:u1"
    assert await redis.get(key) == "2"
    assert 3590_000 < await redis.pttl(key) <= 3600_000


async def test_probes_metrics_the_document_and_unknown_routes_are_not_limited(pool, database_url, key_prefix):
    session = await login(pool, "u1")
    async with serve(make_settings(database_url, rate_limit_per_hour=1, rate_limit_key_prefix=key_prefix)) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/nothing-here", "/nothing"):
            for _ in range(3):
                async with client.get(path) as response:
                    assert response.status in (200, 404), path
                    assert "RateLimit" not in response.headers and "RateLimit-Policy" not in response.headers
        async with client.delete("/api/openapi.json") as response:  # 405
            assert response.status == 405 and "RateLimit-Policy" not in response.headers
        for _ in range(3):  # unauthenticated: no user to count against
            async with client.get("/api/users/u1/updates") as response:
                assert response.status == 401 and "RateLimit-Policy" not in response.headers
        response = await updates(client, session, "u1")
        assert response.status == 200 and remaining(response)[0] == 0
        assert (await updates(client, session, "u1")).status == 429


async def test_a_limit_of_zero_is_off(pool, database_url):
    session = await login(pool, "u1")
    async with serve(make_settings(database_url, rate_limit_per_hour=0)) as client:
        for _ in range(5):
            response = await updates(client, session, "u1")
            assert response.status == 200
            assert "RateLimit" not in response.headers and "RateLimit-Policy" not in response.headers


async def test_in_process_windows_last_an_hour_from_their_first_request():
    now = 0.0
    counter = ratelimit.LocalCounter(3600, clock=lambda: now)
    assert await counter.hit("a") == ratelimit.Hit(1, 3600)
    now = 1800.0
    assert await counter.hit("a") == ratelimit.Hit(2, 1800)
    assert await counter.hit("b") == ratelimit.Hit(1, 3600)
    now = 3600.0  # a's window is over, b's is not
    assert await counter.hit("a") == ratelimit.Hit(1, 3600)
    assert await counter.hit("b") == ratelimit.Hit(2, 1800)


def closed_port() -> int:
    """A port on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_redis_fails_open(pool, database_url, key_prefix, caplog):
    caplog.set_level(logging.INFO, logger="service")
    session = await login(pool, "u1")
    moved = Moved()
    settings = limited(database_url, key_prefix, redis_url=f"redis://:redis-password@127.0.0.1:{closed_port()}/0")
    async with serve(settings) as client:
        for _ in range(LIMIT + 2):
            response = await updates(client, session, "u1")
            assert response.status == 200
            assert response.headers["RateLimit-Policy"] == POLICY
            assert "RateLimit" not in response.headers  # the count is unknown
        async with client.get("/metrics") as response:
            assert STORE_ERRORS in await response.text()
    assert moved(STORE_ERRORS) >= 1
    warnings = [r for r in caplog.records if r.name == redis_store.__name__ and r.levelno == logging.WARNING]
    # With read replicas, the store of users' write positions warns once too.
    counts = [w for w in warnings if w.getMessage().startswith("rate limit store failed")]
    assert len(counts) == 1, [w.getMessage() for w in warnings]  # not one per request
    assert "serving requests uncounted" in counts[0].getMessage()
    assert all("redis-password" not in r.getMessage() for r in caplog.records)


class StallingRedis:
    """A TCP proxy to Redis that, while `stalled`, accepts connections and never answers."""

    def __init__(self, target: str) -> None:
        url = URL(target)
        self.target = (url.host or "127.0.0.1", url.port or 6379)
        self.stalled = True
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.stalled:
                await reader.read()  # swallow everything until the client gives up
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            self._writers.add(upstream_writer)
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


async def test_hanging_redis_delays_no_request_beyond_the_timeout(
    pool, database_url, key_prefix, redis_url, redis, monkeypatch
):
    monkeypatch.setattr(redis_store, "RETRY_AFTER_FAILURE_SECONDS", 0.3)
    session = await login(pool, "u1")
    moved = Moved()
    stalling = StallingRedis(redis_url)
    async with stalling as proxy_url:
        settings = limited(database_url, key_prefix, redis_url=proxy_url, redis_timeout_seconds=0.2)
        async with serve(settings) as client:
            for _ in range(LIMIT + 2):
                started = time.monotonic()
                response = await updates(client, session, "u1")
                assert time.monotonic() - started < 4.5  # redis-py alone would wait 5 s, and retry
                assert response.status == 200 and "RateLimit" not in response.headers
            assert moved(STORE_ERRORS) >= 1
            # Once Redis answers again, requests are counted again.
            stalling.stalled = False
            deadline = time.monotonic() + 10
            while "RateLimit" not in (response := await updates(client, session, "u1")).headers:
                assert time.monotonic() < deadline, "requests were never counted again"
                await asyncio.sleep(0.1)
            # An attempt before, served uncounted on a busy machine, may have counted late.
            assert response.status == 200 and remaining(response)[0] <= LIMIT - 1
