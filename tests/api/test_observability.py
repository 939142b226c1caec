"""The API's probes, metrics, request ids, logs and graceful shutdown, as an operator meets them."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from core import updates
from devtools.tansu import free_port
from service.app import create_app
from tests.factories import apply, at, imported, login, make_settings, published
from tests.metrics import scraped
from tests.processes import api_process, stop


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL that can be cut and restored, like a network."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()

    async def _handle(self, client_reader, client_writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers |= {client_writer, upstream_writer}

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                self._writers.discard(writer)

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def test_readiness_follows_the_database(database_url, pool):
    target = URL(database_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    settings = make_settings(str(target.with_host("127.0.0.1").with_port(proxy.port)), readiness_timeout_seconds=1)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await client.get("/readyz")).status == 200
        await proxy.cut()
        response = await client.get("/readyz")
        assert response.status == 503 and (await response.json())["status"] == "unavailable"
        assert (await client.get("/healthz")).status == 200  # alive all the same
        await proxy.start()
        for _ in range(20):  # the pool replaces its broken connections
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/readyz")).status == 200
        await proxy.cut()


async def test_metrics_move_with_traffic(client, pool):
    headers = {"X-Session-ID": await login(pool, "u1")}
    route = "/api/users/{userId}/favorites"
    before = await (await client.get("/metrics")).text()
    for _ in range(3):
        assert (await client.get("/api/users/u1/favorites", headers=headers)).status == 200
    assert (await client.get("/api/users/u2/favorites", headers=headers)).status == 403
    response = await client.get("/metrics")
    assert response.content_type == "text/plain"
    after = await response.text()

    def moved(name, **labels):
        return scraped(after, name, **labels) - scraped(before, name, **labels)

    assert moved("commons_users_http_requests_total", method="GET", route=route, status="200") == 3
    assert moved("commons_users_http_requests_total", method="GET", route=route, status="403") == 1
    assert moved("commons_users_http_request_duration_seconds_count", method="GET", route=route) == 4
    assert scraped(after, "commons_users_db_pool_connections", state="max") == 10
    assert scraped(after, "commons_users_db_pool_connections", state="in_use") >= 0


async def test_request_ids_are_taken_or_made_and_returned(client):
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    made = (await client.get("/healthz")).headers["X-Request-ID"]
    forged = (await client.get("/healthz", headers={"X-Request-ID": 'evil"} injected'})).headers["X-Request-ID"]
    assert len(made) == 32 and len(forged) == 32 and made != forged


async def test_logs_are_json_lines_without_session_ids(database_url, pool):
    session_id = await login(pool, "u1")
    port = free_port()
    process = api_process(database_url, port)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            for url in (
                f"/api/users/u1/favorites?session-id={session_id}",
                f"/api/users/u1/favorites?state={session_id}&state=other",
                f"/api/sessions/{session_id}?session-id={session_id}",
                f"/api/users/u1/favorites?session-id={session_id}x",
            ):  # unknown: a 401 is logged too
                async with http.get(url, headers={"X-Request-ID": "trace-1"}) as response:
                    assert response.status in (200, 401)
    finally:
        code, stdout = stop(process)
    lines = [json.loads(line) for line in stdout.splitlines()]
    access = [line for line in lines if line["logger"] == "aiohttp.access"]
    assert len(access) == 4 and all(line["request_id"] == "trace-1" for line in access)
    assert "session-id=REDACTED" in access[0]["message"]
    assert session_id not in stdout
    assert code == 0


async def test_sigterm_lets_a_slow_request_finish(database_url, pool):
    headers = {"X-Session-ID": await login(pool, "u1")}
    await apply(pool, published("r1", 1), imported("u1", "r1", "c1", at(1)), published("r1", 2, at_time=at(2)))
    port = free_port()
    process = api_process(database_url, port, SHUTDOWN_GRACE_SECONDS="10")
    async with pool.acquire() as conn, aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        holding = conn.transaction()
        await holding.start()
        await updates.lock_resources(conn, ["r1"])  # the ignore below waits on this lock: a slow request
        slow = asyncio.create_task(http.post("/api/users/u1/updates/r1/ignore", headers=headers))
        async with asyncio.timeout(30):  # until the ignore waits on the lock
            while not await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ):
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert not slow.done() and process.poll() is None  # draining, not gone
        await holding.commit()
        response = await slow
        assert response.status == 204
    _code, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0
    assert await pool.fetchval("SELECT ignored_version_number FROM imports") == 2


async def test_probes_and_scrapes_stay_out_of_the_access_log(database_url):
    port = free_port()
    process = api_process(database_url, port)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            for path in ("/healthz", "/readyz", "/metrics", "/api/openapi.json"):
                async with http.get(path) as response:
                    assert response.status == 200
    finally:
        _, stdout = stop(process)
    access = [
        json.loads(line)["message"] for line in stdout.splitlines() if json.loads(line)["logger"] == "aiohttp.access"
    ]
    assert len(access) == 1 and "/api/openapi.json" in access[0]
