"""`commons-users`: the one command every role of the service runs."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
import signal
import sys

from aiohttp import web
from pydantic import ValidationError

from service import db, jsontext, observability
from service.access_log import AccessLogger
from service.app import create_app
from service.settings import Settings

log = logging.getLogger("commons_users")


def _settings() -> Settings:
    try:
        return Settings()  # type: ignore[call-arg]  # read from the environment
    except ValidationError as exc:
        sys.exit(f"commons-users: bad configuration:\n{exc}")




def migrate(args: argparse.Namespace, settings: Settings) -> None:
    log.info("migrating %s", settings.database_url_for_logs)
    db.migrate(settings.database_url.get_secret_value())


def api(args: argparse.Namespace, settings: Settings) -> None:
    log.info("serving on %s:%s (database %s)", args.host, args.port, settings.database_url_for_logs)
    # On SIGTERM: stop accepting, give in-flight requests the grace period, then close the pool.
    web.run_app(create_app(settings), host=args.host, port=args.port, access_log_class=AccessLogger,
                shutdown_timeout=settings.shutdown_grace_seconds, print=None)


async def _mint_session(settings: Settings, user_id: str) -> str | None:
    from service import auth

    pool = await db.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT EXISTS (SELECT FROM users WHERE id = $1)", user_id) is False:
                return None
            return await auth.open_session(conn, user_id, settings.session_ttl_seconds)
    finally:
        await pool.close()


def session(args: argparse.Namespace, settings: Settings) -> None:
    session_id = asyncio.run(_mint_session(settings, args.user_id))
    if session_id is None:
        sys.exit(f"commons-users: no user {args.user_id!r} (users arrive by events or by POST /api/sessions)")
    print(session_id)


async def _consume(settings: Settings) -> int:
    from consumers.consumer import ConsumerHalted, EventConsumer
    from consumers.health import serve_health

    pool = await db.create_pool(settings.database_url.get_secret_value(),
                                min_size=1, max_size=settings.db_pool_max_size)
    consumer = EventConsumer(settings, pool)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stopping.set)
    health = await serve_health(consumer, settings)
    try:
        await consumer.start()
        await consumer.run(stopping)  # SIGTERM: the batch in hand commits, then the loop ends
        return 0
    except ConsumerHalted as exc:
        log.critical("consumer halted: %s", exc)
        return 2
    finally:
        await consumer.stop()
        await health.cleanup()
        await pool.close()


def consumer(args: argparse.Namespace, settings: Settings) -> None:
    sys.exit(asyncio.run(_consume(settings)))


def read_event_lines(path: Path) -> list[dict[str, object]]:
    """Event documents from a JSON-lines file; every line must be a JSON object."""
    documents, problems = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = jsontext.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(document, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        documents.append(document)
    if problems:
        raise ValueError("; ".join(problems))
    return documents


def produce(args: argparse.Namespace, settings: Settings) -> None:
    from consumers.topics import produce_documents, route

    try:
        documents = read_event_lines(args.file)
        for document in documents:
            route(settings, document)  # all or nothing: refuse the file before sending any of it
    except (OSError, ValueError) as exc:  # UnroutableEvent is a ValueError
        sys.exit(f"commons-users: {args.file}: {exc}")
    count = asyncio.run(produce_documents(settings, documents))
    print(f"produced {count} events to {settings.kafka_bootstrap_servers}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="commons-users", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the SQL migrations (idempotent)").set_defaults(run=migrate)
    serve = commands.add_parser("api", help="serve the HTTP API")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(run=api)
    mint = commands.add_parser("session", help="open a session for an existing user and print its id")
    mint.add_argument("user_id")
    mint.set_defaults(run=session)
    commands.add_parser("consumer", help="consume resource and user events").set_defaults(run=consumer)
    publish = commands.add_parser("produce", help="publish the events of a JSON-lines file to their topics")
    publish.add_argument("file", type=Path)
    publish.set_defaults(run=produce)

    args = parser.parse_args(argv)
    settings = _settings()
    observability.configure_logging(settings.log_level, settings.log_format)
    args.run(args, settings)
