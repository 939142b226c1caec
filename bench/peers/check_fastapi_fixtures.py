"""The scratch databases and the processes of check_fastapi.py.

A scratch database on the local PostgreSQL, loaded with check_fastapi_seed.py's seed one of two
ways: the first two migrations' up sections and the rows inserted by hand (`seed`), or, on a
database the service has migrated, through the service's own code (`seed_through_service`). The
peer is started exactly as bench/peers/README.md documents it (`.venv-peers/bin/uvicorn
bench.peers.fastapi_updates:app`), the service as `python -m service api`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
import hashlib
import json
import os
from pathlib import Path
import socket
import subprocess
import time

import aiohttp
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from bench.peers.check_fastapi_seed import (
    ADA_EXPIRED,
    ADA_SESSION,
    AVAILABLE,
    BOB_SESSION,
    IMPORTS,
    RESOURCES,
    USERS,
    VERSIONS,
    service_events,
)

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = (
    ROOT / "sql/migrations/20261127000000_schema.sql",
    ROOT / "sql/migrations/20261128000000_pending_rule_and_update_details.sql",
)
PEERS_UVICORN = ROOT / ".venv-peers/bin/uvicorn"
SERVICE_PYTHON = ROOT / ".venv/bin/python"


# Databases ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scratch_database(server: str, name: str) -> AsyncIterator[str]:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.rsplit("/", 1)[0] + f"/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def insert_sessions(conn: asyncpg.Connection | PoolConnectionProxy) -> None:
    await conn.executemany(
        "INSERT INTO sessions (id_hash, user_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))",
        [
            (hashlib.sha256(ADA_SESSION.encode()).digest(), "u-ada", 3600.0),
            (hashlib.sha256(ADA_EXPIRED.encode()).digest(), "u-ada", -60.0),
            (hashlib.sha256(BOB_SESSION.encode()).digest(), "u-bob", 3600.0),
        ],
    )


async def seed(dsn: str) -> None:
    """The first two migrations' up sections, then the seed inserted row by row."""
    conn = await asyncpg.connect(dsn)
    try:
        for path in MIGRATIONS:
            await conn.execute(path.read_text().split("-- migrate:down")[0])
        await conn.executemany(
            "INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)"
            " VALUES ($1, $2, $3, $4, $5, now(), gen_random_uuid())",
            USERS,
        )
        await insert_sessions(conn)
        await conn.executemany(
            """
            INSERT INTO resources (id, title, description, type, account_id, account_name, authors, tags, thumbnail,
                                   create_date, update_date, version_id, version_number, event_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9::jsonb, $10, $11, $12, $13, gen_random_uuid())
            """,
            [
                (
                    rid,
                    r["title"],
                    r["description"],
                    r["type"],
                    *r["account"],
                    json.dumps(r["authors"]),
                    r["tags"],
                    None if r["thumbnail"] is None else json.dumps(r["thumbnail"]),
                    r["create_date"],
                    r["update_date"],
                    f"{rid}-v{r['latest']}",
                    r["latest"],
                )
                for rid, r in RESOURCES.items()
            ],
        )
        await conn.executemany(
            "INSERT INTO resource_versions (resource_id, version_number, version_id, version_notes, published_at,"
            " update_date, event_id) VALUES ($1, $2, $1 || '-v' || ($2::integer)::text, $5, $3, $4, gen_random_uuid())",
            VERSIONS,
        )
        await conn.executemany(
            "INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number,"
            " imported_at, ignored_version_number)"
            " VALUES ($1, $2, $3, $4, $2 || '-v' || ($5::integer)::text, $5, $6, $7)",
            IMPORTS,
        )
        await conn.executemany(
            "INSERT INTO available_updates (user_id, resource_id, version_number, published_at)"
            " SELECT $1, $2, v.version_number, v.published_at FROM resources r"
            " JOIN resource_versions v ON v.resource_id = r.id AND v.version_number = r.version_number"
            " WHERE r.id = $2",
            AVAILABLE,
        )
    finally:
        await conn.close()


async def seed_through_service(dsn: str, service_base: str) -> None:
    """Seed a database migrated by the service with the service's own code: events applied by the
    consumer's `core.ingest.apply_events`, ignores through the API, sessions inserted as above."""
    from core import db, ingest  # the project's package, installed in .venv
    from core.events import EVENT_ADAPTER

    pool = await db.create_pool(dsn, min_size=1, max_size=1)  # with the service's codecs
    try:
        conn = await pool.acquire()

        async def apply(stage: int) -> None:
            async with conn.transaction():
                await ingest.apply_events(conn, [EVENT_ADAPTER.validate_python(e) for e in service_events(stage)])

        async def ignore(version_number: int) -> None:
            courses = [i[2] for i in IMPORTS if i[0] == "u-ada" and i[1] == "r-alpha" and i[6] == version_number]
            async with aiohttp.ClientSession() as http:
                url = f"{service_base}/api/users/u-ada/updates/r-alpha/ignore"
                async with http.post(url, json={"courseIds": courses}, headers={"X-Session-ID": ADA_SESSION}) as r:
                    if r.status != 204:
                        raise RuntimeError(f"ignoring {courses} answered {r.status}: {await r.text()}")

        await apply(1)
        await insert_sessions(conn)
        await ignore(2)
        await apply(2)
        await ignore(3)
        await pool.release(conn)
    finally:
        await pool.close()


# Processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_http(url: str, process: subprocess.Popen[bytes], within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with status {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url):
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {within} s")


def start_peer(dsn: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(PEERS_UVICORN), "bench.peers.fastapi_updates:app", "--port", str(port), "--no-access-log"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": dsn},
    )


def start_service(dsn: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "JWT_SECRET": "peer-check-secret-not-for-production",
        "RATE_LIMIT_PER_HOUR": "0",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_MAX_SIZE": "32",
    }
    return subprocess.Popen(
        [str(SERVICE_PYTHON), "-m", "service", "api", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def running(process: subprocess.Popen[bytes], ready_url: str) -> AsyncIterator[None]:
    try:
        await wait_http(ready_url, process)
        yield
    finally:
        stop(process)
