"""Sessions: the caller a session id stands for, and a session's life, from the identity token
that opens it to its end. Only the SHA-256 of a session id is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
import hashlib
import re
import secrets
from typing import Any
from uuid import UUID

import asyncpg
import jwt
from pydantic import ConfigDict, Field, ValidationError, field_validator

from core.db import Queryable
from core.errors import FieldError, Unauthenticated
from core.events import UserUpserted
from core.settings import Settings
from core.text import HostName, Identifier, Text, TextModel
from core.users import upsert_users

SEARCH_ROLE = "group_manager"


@dataclass(frozen=True)
class Session:
    """The authenticated caller, as the session's row and its user's say."""

    id_hash: bytes
    expires: datetime
    user_id: str
    user_full_name: str
    account_id: str
    account_name: str
    canvas_user_id: str | None
    canvas_api_domain: str | None
    roles: tuple[str, ...]
    is_admin: bool

    @property
    def sid(self) -> str:
        """A public handle of the session: the hex of its hash, never the secret id."""
        return self.id_hash.hex()

    @property
    def may_search_users(self) -> bool:
        return self.is_admin or SEARCH_ROLE in self.roles


def hash_session_id(session_id: str) -> bytes:
    # surrogatepass: a JSON body may carry a lone surrogate, which is simply an unknown id.
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).digest()


async def open_session(conn: Queryable, user_id: str, ttl_seconds: int) -> str:
    """Open a session for an existing user, and drop the user's expired ones; returns its secret
    id (256 random bits)."""
    session_id = secrets.token_urlsafe(32)
    await conn.execute(
        """
        WITH expired AS (DELETE FROM sessions WHERE user_id = $2 AND expires_at <= now())
        INSERT INTO sessions (id_hash, user_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
        """,
        hash_session_id(session_id),
        user_id,
        ttl_seconds,
    )
    return session_id


async def find_session(conn: Queryable, session_id: str) -> Session | None:
    """The unexpired session with that id, or None."""
    row = await conn.fetchrow(
        """
        SELECT s.id_hash, s.expires_at, u.id AS user_id, u.name, u.account_id, u.account_name,
               u.canvas_user_id, u.canvas_api_domain, u.roles, u.is_admin
        FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.id_hash = $1 AND s.expires_at > now()
        """,
        hash_session_id(session_id),
    )
    if row is None:
        return None
    return Session(
        id_hash=row["id_hash"],
        expires=row["expires_at"],
        user_id=row["user_id"],
        user_full_name=row["name"],
        account_id=row["account_id"],
        account_name=row["account_name"],
        canvas_user_id=row["canvas_user_id"],
        canvas_api_domain=row["canvas_api_domain"],
        roles=tuple(row["roles"]),
        is_admin=row["is_admin"],
    )


async def session_is_live(conn: Queryable, id_hash: bytes) -> bool:
    """Whether the session with that hash exists and has not expired."""
    live: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM sessions WHERE id_hash = $1 AND expires_at > now())", id_hash
    )
    return live


def for_session(statement: str, *, order_by: str | None = None) -> str:
    """`statement` and the session check in one statement, one round trip: $1 is the SHA-256 of
    the session id, and `statement` reads the session's user as `session.user_id`. No row when
    the session is unknown or expired; otherwise `statement`'s rows (ordered by `order_by`, in
    terms of `rows`), each with `session_user_id` and `found` (true), or one row with only
    `session_user_id` when it has none."""
    return f"""
SELECT session.user_id AS session_user_id, rows.*
FROM sessions session
LEFT JOIN LATERAL (SELECT true AS found, statement.* FROM ({statement}) statement) rows ON true
WHERE session.id_hash = $1 AND session.expires_at > now()
{f"ORDER BY {order_by}" if order_by else ""}
"""


# Where an ended session is announced (the hex of its hash), so that its live streams close.
SESSION_ENDED_CHANNEL = "commons_users_session_ended"


async def end_session(pool: asyncpg.Pool, session: Session) -> None:
    await pool.execute(
        "WITH ended AS (DELETE FROM sessions WHERE id_hash = $1 RETURNING id_hash) "
        "SELECT pg_notify($2, encode(id_hash, 'hex')) FROM ended",
        session.id_hash,
        SESSION_ENDED_CHANNEL,
    )


class IdentityClaims(TextModel):
    """The claims of the JWT that identifies a user to `POST /api/sessions`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sub: Identifier
    account_id: Identifier = Field(alias="accountId")
    account_name: Text = Field(alias="accountName")
    name: Text = Field(min_length=1)
    email: Text
    canvas_user_id: Identifier | None = Field(None, alias="canvasUserId")
    canvas_api_domain: HostName | None = Field(None, alias="canvasApiDomain")
    avatar_url: Text | None = Field(None, alias="avatarUrl")
    is_admin: bool = Field(False, alias="isAdmin")
    roles: list[Text] = Field(default_factory=list, max_length=50)
    exp: int
    iat: int | None = None

    @field_validator("iat")
    @classmethod
    def _a_date(cls, iat: int | None) -> int | None:
        if iat is not None:
            try:
                datetime.fromtimestamp(iat, UTC)
            except (OverflowError, OSError, ValueError):
                raise ValueError("out of the range of dates") from None
        return iat


_CLAIM_OF_ERROR = {
    jwt.ExpiredSignatureError: "exp",
    jwt.InvalidIssuedAtError: "iat",
    jwt.InvalidIssuerError: "iss",
    jwt.InvalidAudienceError: "aud",
}
_CLAIM_IN_MESSAGE = re.compile(r"\((exp|nbf|iat|iss|aud)\)")  # PyJWT names the claim so: "... (iat)"


def _claim_at_fault(exc: jwt.InvalidTokenError) -> str | None:
    for error, claim in _CLAIM_OF_ERROR.items():
        if isinstance(exc, error):
            return claim
    found = _CLAIM_IN_MESSAGE.search(str(exc))
    return found.group(1) if found else None


def verify_token(token: str, settings: Settings) -> IdentityClaims:
    """Verify a session JWT and return its identity claims (Unauthenticated on any failure)."""
    if settings.jwt_public_key is not None:
        key, algorithm = settings.jwt_public_key.get_secret_value(), "RS256"
    else:
        key, algorithm = settings.jwt_secret.get_secret_value(), "HS256"
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            options={"require": ["exp", "sub"]},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(
            "The token lacks identity claims or has malformed ones.",
            [FieldError(field=exc.claim, location="token", message="missing")],
        ) from None
    except jwt.InvalidTokenError as exc:
        claim = _claim_at_fault(exc)
        errors = [FieldError(field=claim, location="token", message=str(exc))] if claim else []
        raise Unauthenticated(f"The token was refused: {exc}.", errors) from None
    try:
        # Strict: a claim of the wrong JSON type ("isAdmin": "true") is refused, never converted.
        return IdentityClaims.model_validate(claims, strict=True)
    except ValidationError as exc:
        errors = [
            FieldError(field=".".join(map(str, e["loc"])), location="token", message=e["msg"])
            for e in exc.errors(include_url=False)
        ]
        raise Unauthenticated("The token lacks identity claims or has malformed ones.", errors) from None


_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


def identity_as_event(claims: IdentityClaims) -> UserUpserted:
    """The token's identity as a directory entry, dated by its `iat`. A token without `iat`
    creates a missing user but never overwrites what the directory (user events) says."""
    issued_at = datetime.fromtimestamp(claims.iat, UTC) if claims.iat is not None else _LONG_AGO
    return UserUpserted(
        event_id=UUID(int=0),
        type="user.upserted",
        occurred_at=issued_at,
        schema_version=1,
        user_id=claims.sub,
        account_id=claims.account_id,
        account_name=claims.account_name,
        name=claims.name,
        email=claims.email,
        avatar_url=claims.avatar_url,
        canvas_user_id=claims.canvas_user_id,
        canvas_api_domain=claims.canvas_api_domain,
        is_admin=claims.is_admin,
        roles=claims.roles,
    )


async def create_session(pool: asyncpg.Pool, claims: IdentityClaims, ttl_seconds: int) -> tuple[str, Session]:
    """Upsert the token's user and open a session; returns the secret id and the session."""
    async with pool.acquire() as conn, conn.transaction():
        await upsert_users(conn, [identity_as_event(claims)])
        session_id = await open_session(conn, claims.sub, ttl_seconds)
        session = await find_session(conn, session_id)
    assert session is not None  # just opened, in the same transaction
    return session_id, session
