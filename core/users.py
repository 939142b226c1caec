"""Users: the directory written by `user.upserted` events and session tokens, a user's Canvas
profile, and the search of an account's users."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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


async def canvas_identity(pool: Queryable, user_id: str, account_id: str) -> asyncpg.Record | None:
    """A user's Canvas user id and host, when the user is in that account."""
    return await pool.fetchrow(
        "SELECT canvas_user_id, canvas_api_domain FROM users WHERE id = $1 AND account_id = $2", user_id, account_id
    )


# User search (README: "Data model", user search): a case-insensitive substring match on name or
# e-mail, in (name, id) order, reading a bounded number of rows a page whatever the text and the
# table statistics. Each page is one statement: two small samples of the account tell rare text
# from common text; rare text is read from the trigram index and sorted, common text is found by
# walking the account in name order for a bounded number of users.
#
# The plans are fixed by the statement's shape, not by estimates. A LIMIT given as a subquery is one
# the planner cannot know, so it plans for the first rows: the walk is an ordered index scan that
# stops, never a sort of the whole account. The trigram and sample indexes hold the account under
# the "C" collation, which the statement asks for, so no other index serves those conditions; the
# samples index the e-mail first and the trigram index the name first, so neither serves the
# other's. The text matched is lower(name || E'\n' || email) LIKE lower(pattern), which is what ILIKE
# does in a UTF-8 database (the walk reads it, lowered, from its index); `name ILIKE ... OR email
# ILIKE ...` then drops a match across the line break.

# Users a page of common text walks through, per item asked for (the page is full when one user in
# 40 matches), and at most.
SEARCH_WALK_PER_ITEM = 40
SEARCH_WALK_MAX = 2000
# From how many matches text is common: in the 1-in-4,096 sample (some 12,000 in the account), and
# else in the 1-in-64 sample (some 1,600). The trigram index's bitmap for rare text then holds at
# most a few thousand users.
SEARCH_COMMON = (3, 25)

# One statement a page. `sample` tells rare text from common text: its counts stop at their
# thresholds ($7, $8), and the second runs only when the first is below its own; text without 3
# letters or digits in a row has no trigram to look up, and counts as common. Rare text: every match
# of account $1 after ($3, $4) from the trigram index, sorted, at most $5 (`walked` null). Common
# text: the next $6 users after ($3, $4), numbered, from the walk's index; those that match, at most
# $5, and the $6-th, after which the next page starts when fewer match. A one-time filter runs one
# of the two.
SEARCH = """
WITH sample AS (
    SELECT CASE
        WHEN $2 !~ '[[:alnum:]]{3}' THEN false
        WHEN (SELECT count(*) FROM (
                  SELECT FROM users
                  WHERE account_id = $1 COLLATE "C" AND (hashtext(id) & 4095) = 0
                    AND lower(email || E'\\n' || name) LIKE lower($2)
                  LIMIT (SELECT $7::int)) AS matches) = $7 THEN false
        ELSE (SELECT count(*) FROM (
                  SELECT FROM users
                  WHERE account_id = $1 COLLATE "C" AND (hashtext(id) & 63) = 0
                    AND lower(email || E'\\n' || name) LIKE lower($2)
                  LIMIT (SELECT $8::int)) AS matches) < $8
    END AS rare
)
(
    SELECT id, name, email, avatar_url, account_id, true AS hit, NULL::bigint AS walked FROM users
    WHERE (SELECT rare FROM sample)
      AND account_id = $1 COLLATE "C" AND lower(name || E'\\n' || email) LIKE lower($2)
      AND (name ILIKE $2 OR email ILIKE $2) AND (name, id) > ($3, $4)
    ORDER BY name, id
    LIMIT $5
)
UNION ALL
(
    SELECT id, name, email, avatar_url, account_id, hit, walked FROM (
        SELECT id, name, email, avatar_url, account_id,
               text LIKE lower($2) AND (name ILIKE $2 OR email ILIKE $2) AS hit,
               row_number() OVER (ORDER BY name, id ROWS UNBOUNDED PRECEDING) AS walked
        FROM (
            SELECT id, name, email, avatar_url, account_id, lower(name || E'\\n' || email) AS text FROM users
            WHERE account_id = $1 AND (name, id) > ($3, $4)
            ORDER BY name, id
            LIMIT (SELECT $6::int)
        ) AS next_users
    ) AS walked_users
    WHERE NOT (SELECT rare FROM sample) AND (hit OR walked = $6)
    ORDER BY name, id
    LIMIT $5
)
"""


class UserFound(NamedTuple):
    id: str
    name: str
    email: str
    avatar_url: str | None
    account_id: str


class SearchPage(NamedTuple):
    """Up to the size asked for of the users found, in (name, id) order, and the (name, id) after
    which the next page starts; None when no match is left. A page of common text may be short,
    even empty, and still have a next page: its walk ended before it found a page of matches."""

    users: list[UserFound]
    after: tuple[str, str] | None


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _found(row: asyncpg.Record) -> UserFound:
    return UserFound(row["id"], row["name"], row["email"], row["avatar_url"], row["account_id"])


def _page(matches: list[asyncpg.Record], limit: int, end: asyncpg.Record | None) -> SearchPage:
    """A page of `matches` (up to limit + 1 of them), continued after the last one shown when there
    are more, else after `end`, the last user walked, if any."""
    if len(matches) > limit:
        end = matches[limit - 1]
    return SearchPage([_found(row) for row in matches[:limit]], None if end is None else (end["name"], end["id"]))


async def search_users(
    pool: Queryable,
    account_id: str,
    text: str,
    after: tuple[str, str] | None,
    limit: int,
    *,
    walk: int | None = None,
    common: tuple[int, int] = SEARCH_COMMON,
) -> SearchPage:
    """Up to `limit` users of the account whose name or e-mail holds `text`, ignoring case, in
    (name, id) order after the keyset position `after`. `walk` and `common` override how far a
    page of common text walks and from how many sampled matches text counts as common."""
    walk = walk or min(SEARCH_WALK_MAX, SEARCH_WALK_PER_ITEM * limit)
    rows = await pool.fetch(SEARCH, account_id, like_pattern(text), *(after or ("", "")), limit + 1, walk, *common)
    last = rows[-1] if rows and rows[-1]["walked"] == walk else None
    return _page([row for row in rows if row["hit"]], limit, last)
