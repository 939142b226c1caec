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
# table statistics. Each page is one statement: small samples of the users tell rare text from
# common text; rare text is read from the trigram index and sorted, common text is found by walking
# the account in name order for a bounded number of users.
#
# A trigram index returns candidates, not matches: every user holding each trigram of the text,
# wherever they sit (`edu ada` has no match but every Ada at school.edu as a candidate). And a GIN
# scan reads the posting list of every key it looks up as far as its rarest one's items reach:
# for `42424@staff`, ten matches, those of the staff domain (125,000 users) to each of the 4,000
# holding `424`, and the account key's (1,000,000) to each candidate. So the trigram scan of rare
# text looks up three windows of it (3 letters or digits in a row), the rarest in the 1-in-4,096
# sample, and not the account (tested on the rows, with the match); and the samples count the
# candidates of those windows over all accounts, which is what that scan then reads. Only letters
# and digits: a window's users are then exactly its trigram's, whereas `24@` (the trigram `24 `)
# counts the users with `24@` but the scan reads every word ending in 24 (`abbott noah`'s `tt `
# read 87,000 rows that way).
#
# The plans are fixed by the statement's shape, not by estimates. A LIMIT given as a subquery is one
# the planner cannot know, so it plans for the first rows: the walk is an ordered index scan that
# stops, never a sort of the whole account. The page's own LIMIT is a subquery too: with no limit
# known, a prepared statement's generic plan costs what a custom one does, so it settles on the
# generic plan after five pages instead of planning each page anew (about 1 ms, a page's worth).
# The sample indexes hold the account under the "C" collation and the e-mail first, the trigram
# index the name first, so each condition has one index that serves it; the account and the match
# are tested on the trigram scan's rows as `IS TRUE` and `ILIKE` conditions, which no index serves,
# so the planner cannot add the walk's index (the whole account) to the scan. The text matched is
# lower(name || E'\n' || email) LIKE lower(pattern), which is what ILIKE does in a UTF-8 database
# (the walk reads it, lowered, from its index); `name ILIKE ... OR email ILIKE ...` then drops a
# match across the line break.

# Users a page of common text walks through, per item asked for (the page is full when one user in
# 40 matches), and at most.
SEARCH_WALK_PER_ITEM = 40
SEARCH_WALK_MAX = 2000
# From how many sampled users text is common: 3 matches in the account's 1-in-4,096 sample (some
# 12,000 in the account), or 3 candidates of its windows in the 1-in-4,096 sample of all users, or
# else 25 in the 1-in-64 sample (some 1,600). The trigram scan of rare text then reads at most a few
# thousand users.
SEARCH_COMMON = (3, 25)

# One statement a page. `windows`: the text's distinct windows, lowered, six at most, in an order
# that covers the text first (one window in three along each run of letters and digits); `probed`
# counts each one's users in the 1-in-4,096 sample, up to $7; `chosen` keeps the three rarest (the
# first, repeated, when fewer). `sample` tells rare text from common text, each count stopping at
# its threshold ($7, $8) and each running only when those before it did not decide: text without 3
# letters or digits in a row has no trigram to look up and counts as common; then the account's
# matches (common text stops there, its windows never computed), then the windows' candidates in the
# 1-in-4,096 sample (skipped when one window alone is below the threshold) and in the 1-in-64 one.
# Rare text: every user holding the three windows, of account $1, matching, after ($3, $4), sorted,
# at most $5 (`walked` null). Common text: the next $6 users after ($3, $4), numbered, from the
# walk's index; those that match, at most $5, and the $6-th, after which the next page starts when
# fewer match. A one-time filter runs one of the two. $9 is the text itself.
SEARCH = """
WITH windows AS (
    SELECT w, spread FROM (
        SELECT DISTINCT ON (w) w, row_number() OVER (ORDER BY (o - 1) % 3, n, o) AS spread
        FROM regexp_matches(lower($9), '[[:alnum:]]{3,}', 'g') WITH ORDINALITY AS runs(run, n),
             generate_series(1, length(run[1]) - 2) AS o,
             LATERAL (SELECT substr(run[1], o, 3) AS w) AS cut
        ORDER BY w, spread
    ) AS distinct_windows
    ORDER BY spread
    LIMIT 6
),
probed AS MATERIALIZED (
    SELECT w, spread, (SELECT count(*) FROM (
                           SELECT FROM users
                           WHERE (hashtext(id) & 4095) = 0 AND lower(email || E'\\n' || name) LIKE '%' || w || '%'
                           LIMIT (SELECT $7::int)) AS sampled) AS hits
    FROM windows
),
chosen AS (
    SELECT w[1] AS w1, coalesce(w[2], w[1]) AS w2, coalesce(w[3], w[1]) AS w3, hits FROM (
        SELECT array_agg(w ORDER BY hits, spread) AS w, min(hits) AS hits FROM probed
    ) AS ranked
),
sample AS (
    SELECT CASE
        WHEN $2 !~ '[[:alnum:]]{3}' THEN false
        WHEN (SELECT count(*) FROM (
                  SELECT FROM users
                  WHERE account_id = $1 COLLATE "C" AND (hashtext(id) & 4095) = 0
                    AND lower(email || E'\\n' || name) LIKE lower($2)
                  LIMIT (SELECT $7::int)) AS matches) = $7 THEN false
        WHEN NOT EXISTS (SELECT FROM windows) THEN false
        WHEN (SELECT hits FROM chosen) = $7 AND (SELECT count(*) FROM (
                  SELECT FROM users
                  WHERE (hashtext(id) & 4095) = 0
                    AND lower(email || E'\\n' || name) LIKE '%' || (SELECT w1 FROM chosen) || '%'
                    AND lower(email || E'\\n' || name) LIKE '%' || (SELECT w2 FROM chosen) || '%'
                    AND lower(email || E'\\n' || name) LIKE '%' || (SELECT w3 FROM chosen) || '%'
                  LIMIT (SELECT $7::int)) AS candidates) = $7 THEN false
        ELSE (SELECT count(*) FROM (
                  SELECT FROM users
                  WHERE (hashtext(id) & 63) = 0
                    AND lower(email || E'\\n' || name) LIKE '%' || (SELECT w1 FROM chosen) || '%'
                    AND lower(email || E'\\n' || name) LIKE '%' || (SELECT w2 FROM chosen) || '%'
                    AND lower(email || E'\\n' || name) LIKE '%' || (SELECT w3 FROM chosen) || '%'
                  LIMIT (SELECT $8::int)) AS candidates) < $8
    END AS rare
)
(
    SELECT id, name, email, avatar_url, account_id, true AS hit, NULL::bigint AS walked FROM users
    WHERE (SELECT rare FROM sample)
      AND lower(name || E'\\n' || email) LIKE '%' || (SELECT w1 FROM chosen) || '%'
      AND lower(name || E'\\n' || email) LIKE '%' || (SELECT w2 FROM chosen) || '%'
      AND lower(name || E'\\n' || email) LIKE '%' || (SELECT w3 FROM chosen) || '%'
      AND (account_id = $1) IS TRUE AND (name ILIKE $2 OR email ILIKE $2) AND (name, id) > ($3, $4)
    ORDER BY name, id
    LIMIT (SELECT $5::int)
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
    LIMIT (SELECT $5::int)
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
    page of common text walks and from how many sampled users (matches, then candidates) text
    counts as common."""
    walk = walk or min(SEARCH_WALK_MAX, SEARCH_WALK_PER_ITEM * limit)
    rows = await pool.fetch(
        SEARCH, account_id, like_pattern(text), *(after or ("", "")), limit + 1, walk, *common, text
    )
    last = rows[-1] if rows and rows[-1]["walked"] == walk else None
    return _page([row for row in rows if row["hit"]], limit, last)
