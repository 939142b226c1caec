"""`commons-users`: the one command every role of the service runs. It is also the one place
where the API's package reaches into the consumer's."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
import logging
import os
from pathlib import Path
import re
import sys
from typing import Any

from aiohttp import web
import asyncpg
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway
from pydantic import ValidationError
import uvloop

from consumers import dead_letter_report, topics
from consumers.dead_letters import BROKER_ERRORS, TIMEOUT_SECONDS, Filters
from consumers.main import consume
from core import audit as drift_audit
from core import db, sessions, users
from core.observability import configure_logging, tune_garbage_collector
from core.settings import Settings, redact_dsn
from service.access_log import AccessLogger
from service.app import create_app

log = logging.getLogger("commons_users")


def _settings() -> Settings:
    try:
        return Settings()  # jwt_secret comes from the environment
    except ValidationError as exc:
        # By variable, without the values given: a URL may hold a password, a key is a secret.
        errors = exc.errors(include_url=False, include_input=False)
        details = "\n".join(f"  {str(error['loc'][0]).upper()}: {error['msg']}" for error in errors)
        print(f"commons-users: bad configuration:\n{details}", file=sys.stderr)
        sys.exit(2)  # as for a bad option


def migrate(args: argparse.Namespace, settings: Settings) -> None:
    log.info("migrating %s", redact_dsn(settings.direct_dsn))
    db.migrate(settings.direct_dsn)  # dbmate's lock belongs to its session: never through a transaction pooler


def api(args: argparse.Namespace, settings: Settings) -> None:
    log.info("serving on %s:%s (database %s)", args.host, args.port, settings.database_url_for_logs)
    app = create_app(settings)
    tune_garbage_collector()
    # On SIGTERM: stop accepting, give in-flight requests the grace period, then close the pool.
    web.run_app(
        app,
        loop=uvloop.new_event_loop(),
        host=args.host,
        port=args.port,
        access_log_class=AccessLogger,
        shutdown_timeout=settings.shutdown_grace_seconds,
        # A client that goes away cancels its handler: a live update stream ends at once, rather
        # than at its next write, and no longer counts against its user's cap.
        handler_cancellation=True,
        print=None,
    )


async def _pool(settings: Settings) -> asyncpg.Pool:
    return await db.create_pool(
        settings.database_url.get_secret_value(),
        min_size=1,
        max_size=1,
        transaction_pooler=settings.database_transaction_pooler,
    )


async def _open_session(settings: Settings, user_id: str) -> str | None:
    pool = await _pool(settings)
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
    pool = await _pool(settings)
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


def _dlq_topics(settings: Settings, topic: str | None) -> list[str]:
    """The event topics whose dead letters a command reads: `topic` (named with or without its
    .dlq), or both."""
    event_topics = topics.event_topics(settings)
    if topic is None:
        return event_topics
    if (source := topic.removesuffix(topics.DLQ_SUFFIX)) not in event_topics:
        print(f"commons-users: dlq: {topic!r} is not an event topic ({', '.join(event_topics)})", file=sys.stderr)
        sys.exit(2)
    return [source]


def dlq(args: argparse.Namespace, settings: Settings) -> None:
    """`commons-users dlq list | show | replay`; exit 2 when the broker fails it, without a traceback."""
    for handler in logging.getLogger().handlers:  # stdout is the report: logs go to stderr
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # not its notes on every assignment
    servers = settings.kafka_bootstrap_servers
    command: Coroutine[Any, Any, int]
    if args.dlq_command == "show":
        topic = args.name.split("/")[0] if "/" in args.name else args.topic  # a full name carries its topic
        command = dead_letter_report.show_dead_letter(servers, _dlq_topics(settings, topic), args.name)
    else:
        filters = Filters(args.since, args.until, args.reason)
        dead_letters = _dlq_topics(settings, args.topic)
        if args.dlq_command == "list":
            command = dead_letter_report.list_dead_letters(servers, dead_letters, filters)
        else:
            command = dead_letter_report.replay_dead_letters(servers, dead_letters, filters, dry_run=args.dry_run)
    try:
        status = asyncio.run(command)
    except BROKER_ERRORS as exc:
        why = f"no answer within {TIMEOUT_SECONDS:g} s" if isinstance(exc, TimeoutError) else str(exc)
        print(f"commons-users: dlq: the broker at {servers} failed: {why or type(exc).__name__}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `dlq list | head`: the reader has read enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the flush at exit fails quietly
        sys.exit(141)  # as a command that SIGPIPE ends
    except KeyboardInterrupt:
        print("commons-users: dlq: interrupted (what was replayed stays so; replaying is safe)", file=sys.stderr)
        sys.exit(130)
    sys.exit(status)


def _time(text: str) -> datetime:
    """ISO 8601; without an offset, UTC (the time `dlq list` prints)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _dead_letter_name(text: str) -> str:
    """A source offset, or TOPIC/PARTITION/OFFSET as `dlq list` prints it (leading zeros dropped)."""
    if not (found := re.fullmatch(r"(?:([A-Za-z0-9._-]+)/([0-9]+)/)?([0-9]+)", text)):
        raise argparse.ArgumentTypeError(f"not an offset nor TOPIC/PARTITION/OFFSET: {text!r}")
    topic, partition, offset = found.groups()
    return f"{topic}/{int(partition)}/{int(offset)}" if topic else str(int(offset))


def _add_dlq(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`commons-users dlq list | show | replay`."""
    group = commands.add_parser(
        "dlq",
        help="list, show and replay the dead letters",
        description="The records the consumer could not apply, in the .dlq topics of the event topics. "
        "Exit 0 when done, 1 when show finds no such dead letter, 2 when the command could not run (a bad "
        "option, an ambiguous offset, the broker out of reach).",
    )
    group.set_defaults(run=dlq)
    dlq_commands = group.add_subparsers(dest="dlq_command", required=True)
    scope = argparse.ArgumentParser(add_help=False)
    scope.add_argument("--topic", metavar="TOPIC", help="an event topic: its dead letters only (default: both topics')")
    scope.add_argument(
        "--since", type=_time, metavar="TIME", help="dead-lettered at or after it (ISO 8601, UTC by default)"
    )
    scope.add_argument("--until", type=_time, metavar="TIME", help="dead-lettered before it (ISO 8601, UTC by default)")
    scope.add_argument("--reason", metavar="TEXT", help="whose error contains this text, in any case")
    dlq_commands.add_parser("list", parents=[scope], help="one line per dead letter")
    show = dlq_commands.add_parser("show", help="a dead letter in full: its record and headers")
    show.add_argument("name", type=_dead_letter_name, metavar="OFFSET", help="OFFSET or TOPIC/PARTITION/OFFSET")
    show.add_argument("--topic", metavar="TOPIC", help="the event topic of a bare offset")
    again = dlq_commands.add_parser(
        "replay", parents=[scope], help="publish the dead letters again to their topics, with their key and value"
    )
    again.add_argument("--dry-run", action="store_true", help="print what would be replayed; publish nothing")


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
    _add_dlq(commands)

    args = parser.parse_args(argv)
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    args.run(args, settings)
