"""`commons-users`: the one command every role of the service runs. It is also the one place
where the API's package reaches into the consumer's."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
import sys

from aiohttp import web
import asyncpg
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from pydantic import ValidationError
import uvloop

from consumers import topics
from consumers.main import consume
from core import audit as drift_audit
from core import db, sessions, users
from core.observability import configure_logging
from core.settings import Settings
from service.access_log import AccessLogger
from service.app import create_app

log = logging.getLogger("commons_users")


def _settings() -> Settings:
    try:
        return Settings()  # jwt_secret comes from the environment
    except ValidationError as exc:
        print(f"commons-users: bad configuration:\n{exc}", file=sys.stderr)
        sys.exit(2)  # as for a bad option


def migrate(args: argparse.Namespace, settings: Settings) -> None:
    log.info("migrating %s", settings.database_url_for_logs)
    db.migrate(settings.database_url.get_secret_value())


def api(args: argparse.Namespace, settings: Settings) -> None:
    log.info("serving on %s:%s (database %s)", args.host, args.port, settings.database_url_for_logs)
    # On SIGTERM: stop accepting, give in-flight requests the grace period, then close the pool.
    web.run_app(
        create_app(settings),
        loop=uvloop.new_event_loop(),
        host=args.host,
        port=args.port,
        access_log_class=AccessLogger,
        shutdown_timeout=settings.shutdown_grace_seconds,
        print=None,
    )


async def _open_session(settings: Settings, user_id: str) -> str | None:
    pool = await db.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    try:
        if not await users.user_exists(pool, user_id):
            return None
        return await sessions.open_session(pool, user_id, settings.session_ttl_seconds)
    finally:
        await pool.close()


def session(args: argparse.Namespace, settings: Settings) -> None:
    session_id = asyncio.run(_open_session(settings, args.user_id))
    if session_id is None:
        sys.exit(f"commons-users: no user {args.user_id!r} (users arrive by events or by POST /api/sessions)")
    print(session_id)


def consumer(args: argparse.Namespace, settings: Settings) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(consume(settings)))


def produce(args: argparse.Namespace, settings: Settings) -> None:
    try:
        documents = topics.read_event_lines(args.file)
        for document in documents:
            topics.route(settings, document)  # all or nothing: refuse the file before sending any of it
    except (OSError, ValueError) as exc:  # UnroutableEvent is a ValueError
        sys.exit(f"commons-users: {args.file}: {exc}")
    count = asyncio.run(topics.produce_documents(settings, documents))
    print(f"produced {count} events to {settings.kafka_bootstrap_servers}")


# The audit's exit statuses: no difference, some (reported, and repaired with --repair), and an
# audit that could not run or report.
AUDIT_CLEAN, AUDIT_DRIFT, AUDIT_FAILED = 0, 1, 2


def audit(args: argparse.Namespace, settings: Settings) -> None:
    try:
        summary = asyncio.run(_audit(args, settings))
        if args.pushgateway:
            _push_drift(args.pushgateway, summary)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"commons-users: the audit failed: {exc}", file=sys.stderr)
        sys.exit(AUDIT_FAILED)
    counts = ", ".join(f"{summary.drift[kind]} {kind}" for kind in drift_audit.DriftKind)
    repaired = f"; repaired {summary.repaired} rows" if args.repair else ""
    print(f"audited {summary.pairs} (user, resource) pairs: {counts}{repaired}")
    sys.exit(AUDIT_DRIFT if summary.found else AUDIT_CLEAN)


async def _audit(args: argparse.Namespace, settings: Settings) -> drift_audit.Summary:
    pool = await db.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1)
    try:
        return await drift_audit.audit(
            pool,
            user_id=args.user,
            resource_id=args.resource,
            repair=args.repair,
            batch_size=args.batch_size,
            report=lambda drift: print(drift.describe(), flush=True),
        )
    finally:
        await pool.close()


def _push_drift(url: str, summary: drift_audit.Summary) -> None:
    """The audit's finding, for Prometheus through a Pushgateway (a CronJob is not scraped)."""
    registry = CollectorRegistry()
    drift = Gauge(
        "commons_users_audit_drift_rows",
        "Available updates that differed from their definition at the last audit, by kind.",
        ["kind"],
        registry=registry,
    )
    for kind in drift_audit.DriftKind:
        drift.labels(kind.value).set(summary.drift[kind])
    push_to_gateway(url, job="commons-users-audit", registry=registry, timeout=10)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


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

    check = commands.add_parser(
        "audit",
        help="compare the available updates with their definition; exit 1 on a difference",
        description="Recompute the available updates from the imports, the latest versions and the "
        "ignores, and print each difference with the table: missing, extra or different rows. "
        f"Exit {AUDIT_CLEAN} when there is none, {AUDIT_DRIFT} when there are some, {AUDIT_FAILED} "
        "when the audit could not run.",
    )
    scope = check.add_mutually_exclusive_group()
    scope.add_argument("--user", help="audit this user's updates only")
    scope.add_argument("--resource", help="audit this resource's updates only")
    check.add_argument("--repair", action="store_true", help="bring each difference in line with the definition")
    check.add_argument("--batch-size", type=_positive, default=5000, help="(user, resource) pairs read at a time")
    check.add_argument("--pushgateway", help="push commons_users_audit_drift_rows to this Prometheus Pushgateway")
    check.set_defaults(run=audit)

    args = parser.parse_args(argv)
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    args.run(args, settings)
