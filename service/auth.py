"""Sessions: where a request's session id comes from, how it is checked, and how one is created."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
import hashlib
import secrets
from uuid import UUID
from typing import Any

import asyncpg
import jwt
from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from service import ingest, jsontext, queries
from service.events import UserUpserted
from service.errors import Forbidden, Unauthenticated
from service.keys import POOL, SESSION, SETTINGS
from service.openapi import OPERATION_ATTRIBUTE
from service.models import FieldError, IdentityClaims, SessionInfo
from service.settings import Settings

SESSION_COOKIE = "session"
SESSION_HEADER = "X-Session-ID"
SESSION_QUERY = "session-id"
STATE_QUERY = "state"
SESSION_BODY_PROPERTY = "sessionId"

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Session:
    """The authenticated caller: the session's contents, and where its id came from."""

    id_hash: bytes
    info: SessionInfo
    from_cookie: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record, *, from_cookie: bool) -> Session:
        info = SessionInfo(
            sid=row["id_hash"].hex(), expires=row["expires_at"], user_id=row["user_id"],
            user_full_name=row["name"], account_id=row["account_id"], account_name=row["account_name"],
            canvas_user_id=row["canvas_user_id"], canvas_api_domain=row["canvas_api_domain"],
            roles=list(row["roles"]), is_admin=row["is_admin"],
        )
        return cls(id_hash=row["id_hash"], info=info, from_cookie=from_cookie)

    @property
    def user_id(self) -> str:
        return self.info.user_id

    @property
    def account_id(self) -> str:
        return self.info.account_id

    @property
    def may_search_users(self) -> bool:
        return self.info.is_admin or "group_manager" in self.info.roles


def hash_session_id(session_id: str) -> bytes:
    # surrogatepass: a JSON body may carry a lone surrogate, which is simply an unknown id.
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


async def open_session(conn: asyncpg.Connection | asyncpg.Pool, user_id: str, ttl_seconds: int) -> str:
    """Open a session for an existing user; returns its secret id (only the hash is stored)."""
    session_id = secrets.token_urlsafe(32)  # 256 bits
    await queries.insert_session(conn, hash_session_id(session_id), user_id, ttl_seconds)
    return session_id


async def _session_id_from_body(request: web.Request) -> str | None:
    if not request.can_read_body or request.content_type != "application/json":
        return None
    try:
        body = jsontext.loads(await request.read())
    except ValueError:
        return None  # the handler reports the bad body, once the caller is known
    value = body.get(SESSION_BODY_PROPERTY) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


async def presented_session_id(request: web.Request) -> tuple[str | None, bool]:
    """The session id from the first source that has one, in the documented order, and whether
    it came from the cookie."""
    if cookie := request.cookies.get(SESSION_COOKIE):
        return cookie, True
    for candidate in (
        request.headers.get(SESSION_HEADER),
        request.query.get(SESSION_QUERY),
        request.query.get(STATE_QUERY),  # the first value of `state`
    ):
        if candidate:
            return candidate, False
    return await _session_id_from_body(request), False


async def authenticate(request: web.Request, pool: asyncpg.Pool) -> Session:
    session_id, from_cookie = await presented_session_id(request)
    if not session_id:
        raise Unauthenticated("No session: send one in the `session` cookie, the X-Session-ID "
                              "header, the `session-id` or `state` query parameter or the body's `sessionId`.")
    row = await queries.live_session(pool, hash_session_id(session_id))
    if row is None:
        raise Unauthenticated("The session is unknown or has expired.")
    session = Session.from_row(row, from_cookie=from_cookie)
    if from_cookie and request.method in _UNSAFE_METHODS:
        check_origin(request)
    return session


def check_origin(request: web.Request) -> None:
    """CSRF defence for cookie sessions: the request must come from an allowed origin."""
    allowed = {*request.app[SETTINGS].allowed_origins, f"{request.scheme}://{request.host}"}
    origin = request.headers.get("Origin")
    if origin is None and (referer := request.headers.get("Referer")):
        origin = str(URL(referer).origin())
    if origin is None or origin.rstrip("/") not in allowed:
        raise Forbidden("A cookie session may change data only from an allowed Origin.")


def decode_identity(token: str, settings: Settings) -> IdentityClaims:
    """Verify a session JWT and return its identity claims (401 on any failure)."""
    if settings.jwt_public_key is not None:
        key, algorithm = settings.jwt_public_key.get_secret_value(), "RS256"
    else:
        key, algorithm = settings.jwt_secret.get_secret_value(), "HS256"
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[algorithm], issuer=settings.jwt_issuer,
            audience=settings.jwt_audience, options={"require": ["exp", "sub"]},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated("The token lacks identity claims or has malformed ones.",
                              [FieldError(field=exc.claim, location="token", message="missing")]) from None
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"The token was refused: {exc}.") from None
    try:
        return IdentityClaims.model_validate(claims)
    except ValidationError as exc:
        errors = [FieldError(field=".".join(map(str, e["loc"])), location="token", message=e["msg"])
                  for e in exc.errors(include_url=False)]
        raise Unauthenticated("The token lacks identity claims or has malformed ones.", errors) from None


def identity_as_event(claims: IdentityClaims) -> UserUpserted:
    """The token's identity as a directory entry, dated by its `iat`. A token without `iat`
    creates a missing user but never overwrites what the directory (user events) says."""
    issued_at = datetime.fromtimestamp(claims.iat, timezone.utc) if claims.iat is not None else _LONG_AGO
    return UserUpserted(
        event_id=UUID(int=0), type="user.upserted", occurred_at=issued_at, schema_version=1,
        user_id=claims.sub, account_id=claims.account_id, account_name=claims.account_name, name=claims.name,
        email=claims.email, avatar_url=claims.avatar_url, canvas_user_id=claims.canvas_user_id,
        canvas_api_domain=claims.canvas_api_domain, is_admin=claims.is_admin, roles=claims.roles,
    )


_LONG_AGO = datetime(1970, 1, 1, tzinfo=timezone.utc)


async def create_session(pool: asyncpg.Pool, claims: IdentityClaims, ttl_seconds: int) -> tuple[str, Session]:
    """Upsert the user and open a session; returns the secret id and the session."""
    async with pool.acquire() as conn, conn.transaction():
        await ingest.upsert_users(conn, [identity_as_event(claims)])
        session_id = await open_session(conn, claims.sub, ttl_seconds)
        row = await queries.live_session(conn, hash_session_id(session_id))
    assert row is not None
    return session_id, Session.from_row(row, from_cookie=False)


@web.middleware
async def session_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Authenticate every route but those whose operation is marked public."""
    operation = getattr(request.match_info.handler, OPERATION_ATTRIBUTE, None)
    if operation is not None and not operation.public:
        request[SESSION] = await authenticate(request, request.app[POOL])
    return await handler(request)
