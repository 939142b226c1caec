"""The benchmark's peer for `GET /api/users/{userId}/updates`, written the common way.

FastAPI + SQLAlchemy 2 async (asyncpg driver) ORM + pydantic v2 response models, served by uvicorn
(uvloop + httptools). This is what a team would write from those projects' documentation: mapped
classes for the base tables, relationships loaded eagerly (joinedload for the to-one sides,
selectinload for the pending courses), pydantic models validated `from_attributes` (the classes
and the models are in fastapi_models.py), and a dependency that authenticates the caller. No raw
SQL, no hand-written JSON, no caching.

It serves the same contract as the service's endpoint (README.md: "Endpoints", "Sessions",
"Updates and ignores"), reading only the base tables of the first migration: sessions,
available_updates, resources, resource_versions and imports.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/commons_users \\
        .venv-peers/bin/uvicorn bench.peers.fastapi_updates:app --port 8090 --no-access-log

Settings (environment): DATABASE_URL (required, postgresql://...), DB_POOL_SIZE (default 32).
"""

# The peer's libraries (fastapi, SQLAlchemy) are in .venv-peers, not in the .venv mypy runs from:
# their names are Any here, and so are the classes, values and decorators made from them.
# mypy: disable-error-code="import-not-found, import-untyped"
# mypy: allow-subclassing-any, no-warn-return-any, allow-untyped-decorators

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
import hashlib
import json
import os
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query
from sqlalchemy import func, select, tuple_
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import joinedload, selectinload

from bench.peers.fastapi_models import AvailableUpdate, Import, PageMeta, Update, UpdatePage, UserSession

# Database and authentication ----------------------------------------------------------------


def database_url() -> str:
    url = make_url(os.environ["DATABASE_URL"])
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


engine = create_async_engine(database_url(), pool_size=int(os.environ.get("DB_POOL_SIZE", "32")), max_overflow=0)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(title="commons-users peer: updates (FastAPI + SQLAlchemy)", lifespan=lifespan)


async def get_db() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as db:
        yield db


Db = Annotated[AsyncSession, Depends(get_db)]


async def current_user_id(
    db: Db,
    session_id: Annotated[str | None, Header()] = None,  # the `session-id` header
    x_session_id: Annotated[str | None, Header()] = None,  # `X-Session-ID`, as the service also takes
    session_id_query: Annotated[str | None, Query(alias="session-id")] = None,
) -> str:
    presented = session_id or x_session_id or session_id_query
    if not presented:
        raise HTTPException(status_code=401, detail="No session.")
    user_id = await db.scalar(
        select(UserSession.user_id).where(
            UserSession.id_hash == hashlib.sha256(presented.encode()).digest(),
            UserSession.expires_at > func.now(),
        )
    )
    if user_id is None:
        raise HTTPException(status_code=401, detail="Unknown or expired session.")
    return user_id


CurrentUserId = Annotated[str, Depends(current_user_id)]


# Cursors: base64url of the JSON [published_at, resource_id] of the page's last item ------------


def encode_cursor(update: AvailableUpdate) -> str:
    payload = json.dumps([update.published_at.isoformat(), update.resource_id])
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        published_at, resource_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(published_at), str(resource_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise HTTPException(status_code=400, detail="Malformed cursor.") from exc


# The endpoint -------------------------------------------------------------------------------


@app.get("/api/users/{userId}/updates", response_model=UpdatePage)
async def list_updates(
    db: Db,
    current_user: CurrentUserId,
    user_id: Annotated[str, Path(alias="userId")],
    size: Annotated[int, Query(ge=1, le=100)] = 24,
    cursor: str | None = None,
) -> UpdatePage:
    if user_id != current_user:
        raise HTTPException(status_code=403, detail="You may only act on your own user id.")
    stmt = (
        select(AvailableUpdate)
        .where(AvailableUpdate.user_id == user_id)
        .options(
            joinedload(AvailableUpdate.resource, innerjoin=True),
            joinedload(AvailableUpdate.version, innerjoin=True),
            selectinload(AvailableUpdate.courses).joinedload(Import.held_version),
        )
        .order_by(AvailableUpdate.published_at.desc(), AvailableUpdate.resource_id.desc())
        .limit(size + 1)
    )
    if cursor is not None:
        stmt = stmt.where(tuple_(AvailableUpdate.published_at, AvailableUpdate.resource_id) < decode_cursor(cursor))
    updates = list(await db.scalars(stmt))
    page = updates[:size]
    return UpdatePage(
        items=[Update.model_validate(update) for update in page],
        meta=PageMeta(cursor=encode_cursor(page[-1]) if len(updates) > size else None),
    )
