"""The API process while PostgreSQL cuts its connections under load: it answers 503 problem+json,
never hangs past its database timeout, and recovers by itself."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from devtools.tansu import free_port
from tests.factories import apply, at, imported, login, published
from tests.processes import api_process, stop

USERS = [f"u{n}" for n in range(8)]
TIMEOUT = 2  # DB_TIMEOUT_SECONDS of the process


async def test_cut_database_connections_give_503_then_the_api_recovers(database_url, pool):
    sessions = {user: await login(pool, user) for user in USERS}
    await apply(pool, published("r1", 1), *(imported(user, "r1", "c1", at(1)) for user in USERS))
    await apply(pool, published("r1", 2, at_time=at(2)))
    port = free_port()
    process = api_process(database_url, port, DB_TIMEOUT_SECONDS=str(TIMEOUT), DB_POOL_MAX_SIZE="4")
    answers: list[tuple[int, str, str | None, float]] = []
    cutting = asyncio.Event()

    async def read_updates(http: aiohttp.ClientSession, user: str) -> None:
        started = time.monotonic()
        headers = {"X-Session-ID": sessions[user]}
        async with http.get(f"/api/users/{user}/updates", headers=headers) as response:
            await response.read()
            answers.append(
                (
                    response.status,
                    response.content_type,
                    response.headers.get("Retry-After"),
                    time.monotonic() - started,
                )
            )

    async def load(http: aiohttp.ClientSession, user: str) -> None:
        while not cutting.is_set():
            await read_updates(http, user)

    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            readers = [asyncio.create_task(load(http, user)) for user in USERS]
            cut, deadline = 0, time.monotonic() + 60
            while cut < 15:  # connections cut as the pool makes them again
                assert time.monotonic() < deadline, f"the pool made {cut} connections again, then no more"
                await asyncio.sleep(0.2)
                cut += await pool.fetchval(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'commons-users-api' AND datname = current_database()) t"
                )
            cutting.set()
            await asyncio.gather(*readers)
            during = list(answers)
            deadline = time.monotonic() + 30
            while True:
                # The pool replaces what was cut, once the process has seen the last cut connections
                # close (on a busy machine, maybe after a request took one): then every read succeeds.
                answers.clear()
                for user in USERS * 3:
                    await read_updates(http, user)
                if {status for status, *_ in answers} == {200} or time.monotonic() > deadline:
                    break
    finally:
        _, log = stop(process)

    assert {status for status, *_ in during} <= {200, 503} and any(status == 503 for status, *_ in during)
    for status, content_type, retry_after, _ in during:
        if status == 503:
            assert content_type == "application/problem+json" and retry_after == "1"
    assert max(seconds for *_, seconds in during) < TIMEOUT + 3  # none waits much beyond the timeout
    assert {status for status, *_ in answers} == {200}
    assert "unhandled error" not in log and "out of reach" in log
