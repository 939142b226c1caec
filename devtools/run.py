"""`make run`: the API and the consumer in one process, a local Kafka-protocol broker, and this
machine's PostgreSQL or an embedded one; the demo data arrives through the broker as events.

Not part of the package: it prints session ids, a signed token and the secret that signs it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import logging
from pathlib import Path
import shlex
import sys
import time

from aiohttp import web
import asyncpg
import jwt
from prometheus_client import REGISTRY
from pydantic import SecretStr

from consumers.consumer import EventConsumer
from consumers.topics import produce_documents, read_event_lines
from core import db, sessions, users
from core.observability import configure_logging
from core.settings import Settings
from devtools.database import fresh_database
from devtools.tansu import tansu_broker
from service.access_log import AccessLogger
from service.app import create_app
from service.keys import POOL

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEMO_EVENTS = ROOT / "docs" / "demo-events.jsonl"
DEMO_UPDATE = ROOT / "docs" / "demo-update.jsonl"
DEMO_DEAD_LETTER = ROOT / "docs" / "demo-dead-letter.jsonl"  # not a valid event: for `commons-users dlq`
DEMO_TEACHER = "u-ada"
DEMO_ADMIN = "u-grace"
DEMO_RESOURCE, DEMO_NEW_VERSION = "r-fractions", "r-fractions-v2"  # the version docs/demo-update.jsonl publishes
STREAM_EXAMPLE = 'curl -sS -N -H "X-Session-ID: $SESSION" "$BASE/api/users/$USER_ID/update-stream"'


async def open_demo_sessions(pool: asyncpg.Pool, ttl_seconds: int) -> dict[str, str]:
    """Sessions for the demo teacher and the demo admin (the users arrive as events)."""
    return {user_id: await sessions.open_session(pool, user_id, ttl_seconds) for user_id in (DEMO_TEACHER, DEMO_ADMIN)}


async def _wait_for(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    """Poll `condition` until it holds; `what` says what it waits for, should it not."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"the demo did not see {what} within {seconds} s")
        await asyncio.sleep(0.1)


async def _demo_users_arrived(pool: asyncpg.Pool) -> bool:
    return all([await users.user_exists(pool, user_id) for user_id in (DEMO_TEACHER, DEMO_ADMIN)])


async def _demo_update_arrived(pool: asyncpg.Pool) -> bool:
    version = await pool.fetchval(
        """
        SELECT r.version_id FROM available_updates a JOIN resources r ON r.id = a.resource_id
        WHERE a.user_id = $1 AND a.resource_id = $2
        """,
        DEMO_TEACHER,
        DEMO_RESOURCE,
    )
    return bool(version == DEMO_NEW_VERSION)


async def _dead_lettered(settings: Settings) -> bool:
    count = REGISTRY.get_sample_value(
        "commons_users_consumer_dead_lettered_total", {"topic": settings.kafka_resource_topic}
    )
    return bool(count)


def demo_flow(settings: Settings, welcome: dict[str, str]) -> Callable[[web.Application], AsyncIterator[None]]:
    """Run the consumer beside the API, feed it the demo events through the broker, then publish a
    new version and wait until its update is visible."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        pool = app[POOL]
        consumer = EventConsumer(settings, pool)
        stopping = asyncio.Event()
        await consumer.start()
        running = asyncio.create_task(consumer.run(stopping))
        try:
            await produce_documents(settings, read_event_lines(DEMO_EVENTS))
            await _wait_for(lambda: _demo_users_arrived(pool), f"the users {DEMO_TEACHER} and {DEMO_ADMIN} arrive")
            await produce_documents(settings, read_event_lines(DEMO_DEAD_LETTER))
            await _wait_for(lambda: _dead_lettered(settings), "the record of docs/demo-dead-letter.jsonl dead-lettered")
            await produce_documents(settings, read_event_lines(DEMO_UPDATE))
            await _wait_for(
                lambda: _demo_update_arrived(pool),
                f"{DEMO_TEACHER}'s update to {DEMO_NEW_VERSION} in available_updates (an ignore kept in a database"
                " that make run did not create hides it)",
            )
            log.info("an update to r-fractions arrived through the broker")
            welcome.update(await open_demo_sessions(pool, settings.session_ttl_seconds))
            yield
        finally:
            stopping.set()
            try:
                await running
            finally:
                await consumer.stop()

    return context


def demo_token(settings: Settings) -> str:
    """A session JWT for the demo teacher, valid for an hour, signed with the configured secret."""
    claims = {
        "sub": DEMO_TEACHER,
        "accountId": "acct-1",
        "accountName": "Lovelace Academy",
        "name": "Ada Lovelace",
        "email": "ada@lovelace.example",
        "canvasUserId": "1001",
        "canvasApiDomain": "canvas.lovelace.example",
        "isAdmin": False,
        "roles": ["teacher"],
        "iat": int(time.time()),
        "exp": int(time.time()) + 3600,
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def export_line(base: str, sessions: dict[str, str], token: str, settings: Settings) -> str:
    """What the README's commands need, `commons-users` on the PATH among it."""
    variables = {
        "BASE": base,
        "USER_ID": DEMO_TEACHER,
        "SESSION": sessions[DEMO_TEACHER],
        "ADMIN_SESSION": sessions[DEMO_ADMIN],
        "TOKEN": token,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())
    return f'export {exports} PATH={shlex.quote(str(Path(sys.prefix) / "bin"))}:"$PATH"'


def print_welcome(base: str, sessions: dict[str, str], token: str, settings: Settings) -> None:
    broker = settings.kafka_bootstrap_servers
    print(
        f"""
commons-users is running at {base}, its consumer reading the Kafka-protocol broker at {broker}
(Ctrl-C stops all of it). Version 2 of r-fractions was just published as an event: the demo
teacher now has an update for it.

Sessions for the demo teacher {DEMO_TEACHER} ($SESSION) and the demo admin {DEMO_ADMIN} ($ADMIN_SESSION),
and a session JWT for the teacher ($TOKEN); the settings of `commons-users audit` and `dlq`, and
the command on the PATH:

{export_line(base, sessions, token, settings)}

curl -sS -H "X-Session-ID: $SESSION" "$BASE/api/users/$USER_ID/updates"

Follow her updates live (Server-Sent Events), then change one from another terminal (README.md,
"Live updates"):

{STREAM_EXAMPLE}

More examples are in README.md; the OpenAPI document is at {base}/api/openapi.json
""",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="where an embedded database lives")
    args = parser.parse_args()
    configure_logging("INFO", "console")

    settings = Settings()  # jwt_secret comes from the environment
    dsn = asyncio.run(fresh_database(settings.database_url.get_secret_value(), args.run_dir))
    db.migrate(dsn)
    with tansu_broker() as broker:
        settings = settings.model_copy(
            update={
                "database_url": SecretStr(dsn),
                "kafka_bootstrap_servers": broker,
                "kafka_create_topics": True,
                # The broker keeps topics in memory: offsets stored by an earlier run lie beyond their end.
                "consumer_offset_beyond_end": "replay",
                # The local broker holds a group join for half the session timeout: keep start-up quick.
                "consumer_session_timeout_ms": 2000,
                "consumer_heartbeat_interval_ms": 200,
            }
        )
        app = create_app(settings)
        sessions: dict[str, str] = {}
        app.cleanup_ctx.append(demo_flow(settings, sessions))
        token = demo_token(settings)
        web.run_app(  # the welcome is printed once the server listens
            app,
            host=args.host,
            port=args.port,
            access_log_class=AccessLogger,
            print=lambda _: print_welcome(f"http://{args.host}:{args.port}", sessions, token, settings),
        )


if __name__ == "__main__":
    main()
