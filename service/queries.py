"""SQL access for the API. Every statement the request path runs lives here."""

from __future__ import annotations

from typing import Any

import asyncpg

# The columns that make a Resource, selected from `resources r`.
_RESOURCE_COLUMNS = """
    r.id, r.title, r.description, r.type, r.account_id, r.account_name, r.authors, r.tags,
    r.thumbnail, r.create_date, r.update_date, r.version_id
"""

def pending(imports: str, latest: str) -> str:
    """SQL: the course of the import row `imports` is pending against version `latest` (§4): it
    holds an older version, and that latest version was not ignored there."""
    return f"{imports}.version_number < {latest} AND coalesce({imports}.ignored_version_number, 0) < {latest}"


# --- users and sessions -------------------------------------------------------------------------


async def insert_session(conn: asyncpg.Connection | asyncpg.Pool, id_hash: bytes, user_id: str,
                         ttl_seconds: int) -> None:
    """Open a session, and drop the user's expired ones (sessions are not kept past their end)."""
    await conn.execute(
        """
        WITH expired AS (DELETE FROM sessions WHERE user_id = $2 AND expires_at <= now())
        INSERT INTO sessions (id_hash, user_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3))
        """,
        id_hash, user_id, ttl_seconds,
    )


async def live_session(conn: asyncpg.Connection | asyncpg.Pool, id_hash: bytes) -> asyncpg.Record | None:
    """The unexpired session with that id hash, joined with its user."""
    return await conn.fetchrow(
        """
        SELECT s.id_hash, s.expires_at, u.id AS user_id, u.name, u.account_id, u.account_name,
               u.canvas_user_id, u.canvas_api_domain, u.roles, u.is_admin
        FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.id_hash = $1 AND s.expires_at > now()
        """,
        id_hash,
    )


async def delete_session(pool: asyncpg.Pool, id_hash: bytes) -> None:
    await pool.execute("DELETE FROM sessions WHERE id_hash = $1", id_hash)


async def user_in_account(pool: asyncpg.Pool, user_id: str, account_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT canvas_user_id, canvas_api_domain FROM users WHERE id = $1 AND account_id = $2",
        user_id, account_id,
    )


# How many users of the account, in name order after the cursor, a search first walks through.
SEARCH_WALK = 2000


def search_users_sql(*, strategy: str, continued: bool) -> str:
    """Users of account $1 whose name or e-mail matches the ILIKE pattern $2, in (name, id) order,
    at most $3 of them, after ($4, $5) when `continued`. Two strategies, because no single plan is
    fast for both common and rare text:

    - "walk" reads the next $6 users of the account from the (account_id, name, id) index and
      keeps the matches: quick when matches are common;
    - "trigram" collects every match from the trigram indexes, then sorts them: quick when they
      are rare. Its ORDER BY is an expression the name index cannot give, so that the planner
      cannot fall back on walking the whole account.
    """
    continuation = "AND (name, id) > ($4, $5)" if continued else ""
    if strategy == "walk":
        return f"""
            SELECT id, name, email, avatar_url, account_id
            FROM (
                SELECT id, name, email, avatar_url, account_id FROM users
                WHERE account_id = $1 {continuation}
                ORDER BY name, id
                LIMIT ${6 if continued else 4}
            ) walked
            WHERE name ILIKE $2 OR email ILIKE $2
            ORDER BY name, id
            LIMIT $3
        """
    return f"""
        SELECT id, name, email, avatar_url, account_id
        FROM users
        WHERE account_id = $1 AND (name ILIKE $2 OR email ILIKE $2) {continuation}
        ORDER BY name || '', id
        LIMIT $3
    """


async def search_users(
    pool: asyncpg.Pool, account_id: str, pattern: str, after: tuple[Any, ...] | None, limit: int,
    *, walk: int = SEARCH_WALK,
) -> list[asyncpg.Record]:
    continued = after is not None
    args = (account_id, pattern, limit, *(after or ()))
    rows = await pool.fetch(search_users_sql(strategy="walk", continued=continued), *args, walk)
    if len(rows) == limit:
        return rows
    # Fewer matches than wanted among the next `walk` users: they are rare, ask the trigram indexes.
    return await pool.fetch(search_users_sql(strategy="trigram", continued=continued), *args)


# --- resources, imports and favorites -----------------------------------------------------------


async def imported_resources(
    pool: asyncpg.Pool, user_id: str, after: tuple[Any, ...] | None, limit: int
) -> list[asyncpg.Record]:
    """The resources a user imported, by their latest import, newest first."""
    return await pool.fetch(
        f"""
        SELECT {_RESOURCE_COLUMNS}, i.last_imported_at AS sort_key
        FROM (
            SELECT resource_id, max(imported_at) AS last_imported_at
            FROM imports
            WHERE user_id = $1
            GROUP BY resource_id
        ) i
        JOIN resources r ON r.id = i.resource_id
        WHERE $2::timestamptz IS NULL OR (i.last_imported_at, r.id) < ($2, $3)
        ORDER BY i.last_imported_at DESC, r.id DESC
        LIMIT $4
        """,
        user_id, *(after or (None, None)), limit,
    )


async def favorite_resources(
    pool: asyncpg.Pool | asyncpg.Connection, user_id: str, after: tuple[Any, ...] | None, limit: int | None
) -> list[asyncpg.Record]:
    """A user's favorite resources, most recently marked first (`limit` None: all of them)."""
    return await pool.fetch(
        f"""
        SELECT {_RESOURCE_COLUMNS}, f.created_at AS sort_key
        FROM favorites f
        JOIN resources r ON r.id = f.resource_id
        WHERE f.user_id = $1
          AND ($2::timestamptz IS NULL OR (f.created_at, f.resource_id) < ($2, $3))
        ORDER BY f.created_at DESC, f.resource_id DESC
        LIMIT $4
        """,
        user_id, *(after or (None, None)), limit,
    )


async def add_favorite(conn: asyncpg.Connection, user_id: str, resource_id: str) -> bool:
    """Mark a favorite (a no-op when it is one already). False when the resource does not exist."""
    status = await conn.fetchval(
        """
        WITH resource AS (SELECT id FROM resources WHERE id = $2 FOR KEY SHARE),
        added AS (
            INSERT INTO favorites (user_id, resource_id)
            SELECT $1, id FROM resource
            ON CONFLICT (user_id, resource_id) DO NOTHING
        )
        SELECT EXISTS (SELECT FROM resource)
        """,
        user_id, resource_id,
    )
    return bool(status)


async def remove_favorite(pool: asyncpg.Pool, user_id: str, resource_id: str) -> None:
    await pool.execute("DELETE FROM favorites WHERE user_id = $1 AND resource_id = $2", user_id, resource_id)


# --- available updates --------------------------------------------------------------------------

# A user's available updates with their pending courses, newest version first. A course is
# pending when the version it holds is older than the latest and the latest was not ignored there.
_UPDATES = f"""
    SELECT {_RESOURCE_COLUMNS}, a.published_at AS sort_key,
           v.version_id AS update_version_id, v.version_notes, v.published_at AS version_create_date,
           v.update_date AS version_update_date, c.courses
    FROM available_updates a
    JOIN resources r ON r.id = a.resource_id
    JOIN resource_versions v ON v.resource_id = a.resource_id AND v.version_number = a.version_number
    CROSS JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_object(
                   'courseId', i.course_id, 'courseName', i.course_name, 'importDate', i.imported_at,
                   'versionCreateDate', held.published_at)
               ORDER BY i.imported_at DESC, i.course_id) AS courses
        FROM imports i
        LEFT JOIN resource_versions held
               ON held.resource_id = i.resource_id AND held.version_number = i.version_number
        WHERE i.user_id = a.user_id AND i.resource_id = a.resource_id AND {pending("i", "a.version_number")}
    ) c
    WHERE a.user_id = $1 {{condition}}
    ORDER BY a.published_at DESC, a.resource_id DESC
    LIMIT $2
"""


async def available_updates(
    pool: asyncpg.Pool, user_id: str, after: tuple[Any, ...] | None, limit: int
) -> list[asyncpg.Record]:
    if after is None:
        return await pool.fetch(_UPDATES.format(condition=""), user_id, limit)
    return await pool.fetch(
        _UPDATES.format(condition="AND (a.published_at, a.resource_id) < ($3, $4)"), user_id, limit, *after
    )


async def available_update(pool: asyncpg.Pool, user_id: str, resource_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(_UPDATES.format(condition="AND a.resource_id = $3"), user_id, 1, resource_id)


async def pending_courses(conn: asyncpg.Connection, user_id: str, resource_id: str, latest: int) -> list[str]:
    rows = await conn.fetch(
        f"SELECT course_id FROM imports WHERE user_id = $1 AND resource_id = $2 AND {pending('imports', '$3')}",
        user_id, resource_id, latest,
    )
    return [row["course_id"] for row in rows]


async def ignore_courses(conn: asyncpg.Connection, user_id: str, resource_id: str, courses: list[str],
                         latest: int) -> None:
    await conn.execute(
        """
        UPDATE imports SET ignored_version_number = $4
        WHERE user_id = $1 AND resource_id = $2 AND course_id = ANY($3::text[])
        """,
        user_id, resource_id, courses, latest,
    )
