"""What tests are made of: settings, tokens and sessions, events, and rows written through the
same code the consumer runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import secrets
from typing import Any
from uuid import uuid4

import asyncpg
import jwt

from core import ingest, sessions
from core.events import Event, ResourceDeleted, ResourceImported, ResourceVersionPublished, UserUpserted
from core.settings import Settings

JWT_SECRET = "test-jwt-secret-" + "s" * 16
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# Redis keys of this run's own: other runs may share the Redis.
REDIS_PREFIX = f"commons-users-test-{secrets.token_hex(4)}:"
# How the apps of the tests reach a database, by the URL of its primary, when not directly: read
# replicas, a pooler (tests/api/conftest.py).
TOPOLOGIES: dict[str, dict[str, Any]] = {}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None,
        **{
            "database_url": database_url,
            "jwt_secret": JWT_SECRET,
            "rate_limit_key_prefix": REDIS_PREFIX + "rate-limit:",
            "update_stream_key_prefix": REDIS_PREFIX + "update-streams:",
            "written_positions_key_prefix": REDIS_PREFIX + "written:",
            # Longer than a loaded machine's stalls, which the default 0.1 s is not: a request whose
            # counter answered late is served uncounted. Tests of a slow Redis pass their own.
            "redis_timeout_seconds": 5,
            **TOPOLOGIES.get(database_url, {}),
            **overrides,
        },
    )


async def empty_tables(pool: asyncpg.Pool) -> None:
    """Empty every table but the migrations' record. Only those written, vacuumed or analyzed since
    they were last emptied are truncated (the others are as a TRUNCATE leaves them: no page, no
    statistics), with the tables that refer to them: a TRUNCATE costs a file per table and index,
    and a flush at commit, and a test writes a few tables."""
    tables = await pool.fetch(
        "SELECT quote_ident(relname) AS name FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND relname <> 'schema_migrations' "
        "AND (pg_relation_size(oid) > 0 OR reltuples <> -1)"
    )
    if tables:
        await pool.execute(f"TRUNCATE {', '.join(t['name'] for t in tables)} CASCADE")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    """A full set of identity claims for a session token."""
    return {
        "sub": user_id,
        "accountId": "acct-1",
        "accountName": "Academy One",
        "name": f"User {user_id}",
        "email": f"{user_id}@example.edu",
        "canvasUserId": f"c{user_id}",
        "canvasApiDomain": "canvas.example.edu",
        "isAdmin": False,
        "roles": ["teacher"],
        "iat": int(datetime.now(UTC).timestamp()),
        "exp": int((datetime.now(UTC) + timedelta(hours=1)).timestamp()),
        **overrides,
    }


def token(user_id: str, *, key: Any = JWT_SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    return jwt.encode(claims(user_id, **overrides), key, algorithm=algorithm)


async def login(pool: asyncpg.Pool, user_id: str, **overrides: Any) -> str:
    """Create the user (from its claims) and a session for it; returns the session id."""
    identity = sessions.IdentityClaims.model_validate(claims(user_id, **overrides))
    session_id, _ = await sessions.create_session(pool, identity, 3600)
    return session_id


def user_upserted(
    user_id: str,
    *,
    account_id: str = "acct-1",
    name: str | None = None,
    email: str | None = None,
    at_time: datetime = T0,
    **overrides: Any,
) -> UserUpserted:
    """A `user.upserted` event."""
    return UserUpserted.model_validate(
        {
            "eventId": str(uuid4()),
            "type": "user.upserted",
            "occurredAt": at_time.isoformat(),
            "schemaVersion": 1,
            "userId": user_id,
            "accountId": account_id,
            "accountName": "Academy",
            "name": name or f"User {user_id}",
            "email": email or f"{user_id}@example.edu",
            "canvasUserId": f"c{user_id}",
            "canvasApiDomain": "canvas.example.edu",
            **overrides,
        }
    )


async def add_user(pool: asyncpg.Pool, user_id: str, **kwargs: Any) -> None:
    await apply(pool, user_upserted(user_id, **kwargs))


def published(
    resource_id: str, version: int = 1, *, at_time: datetime = T0, title: str | None = None, **overrides: Any
) -> ResourceVersionPublished:
    """A `resource.version.published` event."""
    document = {
        "eventId": str(uuid4()),
        "type": "resource.version.published",
        "occurredAt": at_time.isoformat(),
        "schemaVersion": 1,
        "resourceId": resource_id,
        "versionId": f"{resource_id}-v{version}",
        "versionNumber": version,
        "versionNotes": f"Notes of version {version}",
        "publishedAt": at_time.isoformat(),
        "resource": {
            "title": title or f"Resource {resource_id}",
            "description": f"About {resource_id}",
            "type": "assignment",
            "account": {"id": "acct-1", "name": "Academy One"},
            "authors": [{"id": "author-1", "name": "An Author", "avatarUrl": None}],
            "tags": ["math"],
            "thumbnail": {"url": f"https://img.example/{resource_id}.png", "description": "thumbnail"},
            "createDate": T0.isoformat(),
            "updateDate": at_time.isoformat(),
        },
        **overrides,
    }
    return ResourceVersionPublished.model_validate(document)


def imported(
    user_id: str, resource_id: str, course_id: str, imported_at: datetime, version: int = 1, **overrides: Any
) -> ResourceImported:
    """A `resource.imported` event."""
    return ResourceImported.model_validate(
        {
            "eventId": str(uuid4()),
            "type": "resource.imported",
            "occurredAt": imported_at.isoformat(),
            "schemaVersion": 1,
            "resourceId": resource_id,
            "userId": user_id,
            "courseId": course_id,
            "courseName": f"Course {course_id}",
            "versionId": f"{resource_id}-v{version}",
            "versionNumber": version,
            "importedAt": imported_at.isoformat(),
            **overrides,
        }
    )


def deleted(resource_id: str, deleted_at: datetime) -> ResourceDeleted:
    """A `resource.deleted` event."""
    return ResourceDeleted.model_validate(
        {
            "eventId": str(uuid4()),
            "type": "resource.deleted",
            "occurredAt": deleted_at.isoformat(),
            "schemaVersion": 1,
            "resourceId": resource_id,
            "deletedAt": deleted_at.isoformat(),
        }
    )


async def apply(pool: asyncpg.Pool, *events: Event) -> None:
    """Apply events as the consumer does, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        await ingest.apply_events(conn, events)


async def add_resource(
    pool: asyncpg.Pool, resource_id: str, *, version: int = 1, title: str | None = None, published_at: datetime = T0
) -> None:
    await apply(pool, published(resource_id, version, at_time=published_at, title=title))


async def add_import(
    pool: asyncpg.Pool, user_id: str, resource_id: str, course_id: str, imported_at: datetime, *, version: int = 1
) -> None:
    await apply(pool, imported(user_id, resource_id, course_id, imported_at, version))


async def add_favorite(pool: asyncpg.Pool, user_id: str, resource_id: str, created_at: datetime) -> None:
    await pool.execute(
        "INSERT INTO favorites (user_id, resource_id, created_at) VALUES ($1, $2, $3)", user_id, resource_id, created_at
    )
