"""Rows for tests, written straight to the tables the service reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import jwt

from service import auth
from service.models import IdentityClaims
from tests.conftest import JWT_SECRET

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    """A full set of identity claims for a session token."""
    return {
        "sub": user_id, "accountId": "acct-1", "accountName": "Academy One", "name": f"User {user_id}",
        "email": f"{user_id}@example.edu", "canvasUserId": f"c{user_id}", "canvasApiDomain": "canvas.example.edu",
        "isAdmin": False, "roles": ["teacher"],
        "exp": int((datetime.now(timezone.utc) + timedelta(hours=1)).timestamp()),
        **overrides,
    }


def token(user_id: str, *, key: str = JWT_SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    return jwt.encode(claims(user_id, **overrides), key, algorithm=algorithm)


async def login(pool: asyncpg.Pool, user_id: str, **overrides: Any) -> str:
    """Create the user (from its claims) and a session for it; returns the session id."""
    session_id, _ = await auth.create_session(pool, IdentityClaims.model_validate(claims(user_id, **overrides)), 3600)
    return session_id


async def add_user(pool: asyncpg.Pool, user_id: str, *, account_id: str = "acct-1", name: str | None = None,
                   email: str | None = None) -> None:
    await pool.execute(
        """INSERT INTO users (id, account_id, account_name, name, email, canvas_user_id, canvas_api_domain, updated_at)
           VALUES ($1, $2, 'Academy', $3, $4, $5, 'canvas.example.edu', now())""",
        user_id, account_id, name or f"User {user_id}", email or f"{user_id}@example.edu", f"c{user_id}",
    )


async def add_resource(pool: asyncpg.Pool, resource_id: str, *, version: int = 1, title: str | None = None,
                       published: datetime = T0) -> None:
    await pool.execute(
        """INSERT INTO resources (id, title, description, type, account_id, account_name, authors, tags,
                                  thumbnail, create_date, update_date, version_id, version_number)
           VALUES ($1, $2, 'About ' || $1, 'assignment', 'acct-1', 'Academy One', $3, '{math}', $4, $5, $5,
                   $1 || '-v' || $6::int, $6::int)""",
        resource_id, title or f"Resource {resource_id}",
        [{"id": "author-1", "name": "An Author", "avatarUrl": None}],
        {"url": f"https://img.example/{resource_id}.png", "description": "thumbnail"},
        published, version,
    )


async def add_import(pool: asyncpg.Pool, user_id: str, resource_id: str, course_id: str, imported_at: datetime,
                     *, version: int = 1) -> None:
    await pool.execute(
        """INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
           VALUES ($1, $2, $3, 'Course ' || $3, $2 || '-v' || $4::int, $4::int, $5)""",
        user_id, resource_id, course_id, version, imported_at,
    )


async def add_favorite(pool: asyncpg.Pool, user_id: str, resource_id: str, created_at: datetime) -> None:
    await pool.execute("INSERT INTO favorites (user_id, resource_id, created_at) VALUES ($1, $2, $3)",
                       user_id, resource_id, created_at)

