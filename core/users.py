"""Users: the directory written by `user.upserted` events and session tokens, a user's Canvas
profile, and the search of an account's users."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from core.db import Connection, Queryable
from core.events import UserUpserted


async def upsert_users(conn: Connection, users: Sequence[UserUpserted]) -> None:
    """Write user identities, each unless a newer one (by occurredAt, then eventId) is there."""
    await conn.execute(
        """
        INSERT INTO users (id, account_id, account_name, name, email, avatar_url, canvas_user_id,
                           canvas_api_domain, is_admin, roles, updated_at, event_id)
        SELECT DISTINCT ON (user_id) user_id, account_id, account_name, name, email, avatar_url, canvas_user_id,
               canvas_api_domain, is_admin, ARRAY(SELECT jsonb_array_elements_text(roles)), occurred_at, event_id
        FROM jsonb_to_recordset($1::jsonb) AS e(
            user_id text, account_id text, account_name text, name text, email text, avatar_url text,
            canvas_user_id text, canvas_api_domain text, is_admin boolean, roles jsonb, occurred_at timestamptz,
            event_id uuid)
        ORDER BY user_id, occurred_at DESC, event_id DESC
        ON CONFLICT (id) DO UPDATE SET
            account_id = EXCLUDED.account_id, account_name = EXCLUDED.account_name, name = EXCLUDED.name,
            email = EXCLUDED.email, avatar_url = EXCLUDED.avatar_url, canvas_user_id = EXCLUDED.canvas_user_id,
            canvas_api_domain = EXCLUDED.canvas_api_domain, is_admin = EXCLUDED.is_admin,
            roles = EXCLUDED.roles, updated_at = EXCLUDED.updated_at, event_id = EXCLUDED.event_id
        WHERE (users.updated_at, users.event_id) < (EXCLUDED.updated_at, EXCLUDED.event_id)
        """,
        [user.model_dump() for user in users],
    )


async def user_exists(conn: Queryable, user_id: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT FROM users WHERE id = $1)", user_id))


async def canvas_identity(pool: asyncpg.Pool, user_id: str, account_id: str) -> asyncpg.Record | None:
    """A user's Canvas user id and host, when the user is in that account."""
    return await pool.fetchrow(
        "SELECT canvas_user_id, canvas_api_domain FROM users WHERE id = $1 AND account_id = $2", user_id, account_id
    )


# User search is a case-insensitive substring match, and no single plan is fast for both common
# and rare text on a large account, so it has two statements (README: "Data model").

# How many users of the account, in name order after the cursor, a search first walks through.
SEARCH_WALK = 2000

# The walk: the next $6 users of account $1 after ($3, $4) from the (account_id, name, id) index,
# keeping those whose name or e-mail matches the ILIKE pattern $2, at most $5. Quick when matches
# are common.
SEARCH_BY_WALK = """
SELECT id, name, email, avatar_url, account_id
FROM (
    SELECT id, name, email, avatar_url, account_id FROM users
    WHERE account_id = $1 AND (name, id) > (coalesce($3::text, ''), coalesce($4::text, ''))
    ORDER BY name, id
    LIMIT $6
) walked
WHERE name ILIKE $2 OR email ILIKE $2
ORDER BY name, id
LIMIT $5
"""

# The trigram step: every match from the trigram indexes, sorted. Quick when matches are rare. Its
# ORDER BY is an expression the name index cannot give, so that the planner cannot fall back on
# walking the whole account.
SEARCH_BY_TRIGRAMS = """
SELECT id, name, email, avatar_url, account_id
FROM users
WHERE account_id = $1 AND (name ILIKE $2 OR email ILIKE $2)
  AND (name, id) > (coalesce($3::text, ''), coalesce($4::text, ''))
ORDER BY name || '', id
LIMIT $5
"""


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_users(
    pool: asyncpg.Pool,
    account_id: str,
    text: str,
    after: tuple[str, str] | None,
    limit: int,
    *,
    walk: int = SEARCH_WALK,
) -> list[asyncpg.Record]:
    """Users of the account whose name or e-mail holds `text`, ignoring case, in (name, id) order
    after the keyset position `after`."""
    arguments = (account_id, like_pattern(text), *(after or (None, None)), limit)
    rows = await pool.fetch(SEARCH_BY_WALK, *arguments, walk)
    if len(rows) == limit:
        return rows
    # Fewer matches than wanted among the next `walk` users: they are rare, ask the trigram indexes.
    return await pool.fetch(SEARCH_BY_TRIGRAMS, *arguments)
