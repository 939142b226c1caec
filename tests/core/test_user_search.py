"""User search: one statement a page that reads at most 5,000 rows whatever the text and whatever
the table statistics, shown from EXPLAIN on an account large enough that an unbounded plan reads
far more; and that paging through cursors returns exactly the matches, each once, in (name, id)
order, whichever way each page takes (the trigram index for rare text, the walk for common text)."""

import asyncio
from collections.abc import Iterator
import json
import secrets
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import pytest
from yarl import URL

from core import db, users
from core.users import like_pattern
from tests.factories import add_user

ROW_LIMIT = 5_000
ACCOUNT, OTHER_ACCOUNT = "acct-search", "acct-other"
ACCOUNT_USERS = 80_000
TEXTS = {
    "common early": "staff",
    "common late": "ann",
    "rare": "qzx",
    "rare, common trigrams": "2424@staff",
    "absent": "zzzq",
    "absent, common trigrams": "edu ada",
}
# In name order the account is grouped by first name, and only the last four first names (a twelfth
# of the account, none among its first 87 %) hold "ann"; one e-mail in eight is at the staff
# domain; five users have the last name Qzxwell. E-mail numbers ending in 2424 are eight, all at the
# staff domain, though hundreds of users hold each trigram of "2424@staff"; no user holds "edu ada",
# though every Ada and Adam (some 3,300) holds each of its trigrams. The names are space-separated.
FIRST_NAMES = (
    "Aaron Abel Ada Adam Adrian Agnes Albert Alice Amir Boris Carla Chloe David Diego Elena Emil Farah Felix Greta "
    "Hugo Ines Ivan Jonas Julia Karim Laura Leon Lucia Marco Maya Nadia Noah Olga Oscar Paula Pedro Rosa Ruben Sofia "
    "Tomas Ursula Victor Xenia Yusuf Vianney Yanna Zanna Zannie"
)
LAST_NAMES = "Abbott Berg Costa Diaz Eriksen Fischer Garcia Hofer Ito Jensen Kowalski Moreau Novak Okafor"
INSERT_ACCOUNT = """
INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)
SELECT $1 || '-' || n, $1, 'School', first || ' ' || last,
       lower(first) || '.' || lower(last) || n || CASE WHEN n % 8 = 0 THEN '@staff.school.edu' ELSE '@school.edu' END,
       now(), gen_random_uuid()
FROM generate_series(1, $2::int) AS n,
     LATERAL (SELECT string_to_array($3, ' ') AS firsts, string_to_array($4, ' ') AS lasts) AS names,
     LATERAL (SELECT firsts[1 + (hashint4(n) & 2147483647) % cardinality(firsts)] AS first,
                     CASE WHEN n % ($2::int / 5) = 1 THEN 'Qzxwell'
                          ELSE lasts[1 + (hashint4(n + 7919) & 2147483647) % cardinality(lasts)]
                     END AS last) AS drawn
"""
# What the search must find, as the plain definition says it.
MATCHES = """
SELECT id FROM users WHERE account_id = $1 AND (name ILIKE $2 OR email ILIKE $2) ORDER BY name, id
"""


def test_like_pattern_escapes():
    assert like_pattern("a%b_c\\") == "%a\\%b\\_c\\\\%"


async def _fill(url: str, analyzed: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        # Autovacuum must not analyze the table behind the test's back.
        await conn.execute("ALTER TABLE users SET (autovacuum_enabled = false)")
        for account, count in ((ACCOUNT, ACCOUNT_USERS), (OTHER_ACCOUNT, ACCOUNT_USERS // 8)):
            await conn.execute(INSERT_ACCOUNT, account, count, FIRST_NAMES, LAST_NAMES)
        if analyzed:
            await conn.execute("VACUUM ANALYZE users")
    finally:
        await conn.close()


async def _admin(server: str, statement: str) -> None:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module", params=["fresh", "analyzed"])
def searched_database(request, database_url) -> Iterator[str]:
    """A migrated database of its own holding the searched account and another: freshly inserted
    (never analyzed nor vacuumed), or after VACUUM ANALYZE."""
    server = str(URL(database_url).with_path("/postgres"))
    name = f"commons_users_search_{secrets.token_hex(4)}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    url = str(URL(database_url).with_path(f"/{name}"))
    try:
        db.migrate(url)
        asyncio.run(_fill(url, analyzed=request.param == "analyzed"))
        yield url
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE "{name}" WITH (FORCE)'))


class ExplainingPool:
    """Stands for the pool in `search_users`: keeps the EXPLAIN (ANALYZE, BUFFERS) of every
    statement, as a custom plan (the parameters' values known) or as the generic plan a prepared
    statement may switch to; then runs the statement for its rows."""

    def __init__(self, conn: asyncpg.Connection, generic: bool) -> None:
        self.conn, self.generic = conn, generic
        self.plans: list[dict[str, Any]] = []
        self.prepared: dict[str, str] = {}

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
        if self.generic:
            if sql not in self.prepared:
                self.prepared[sql] = f"search_{secrets.token_hex(4)}"
                await self.conn.execute(f"PREPARE {self.prepared[sql]} AS {sql}")
            # EXECUTE takes no protocol parameters: the values go in as literals, of the statement's types.
            literals = [await self.conn.fetchval("SELECT quote_literal($1::text)", str(arg)) for arg in args]
            explained = await self.conn.fetchval(f"{explain} EXECUTE {self.prepared[sql]}({', '.join(literals)})")
        else:
            explained = await self.conn.fetchval(f"{explain} {sql}", *args)
        self.plans.append(json.loads(explained)[0]["Plan"])
        return await self.conn.fetch(sql, *args)


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from nodes(child)


def rows_read(plan: dict[str, Any]) -> int:
    """The rows out of every scan node (heap, index, bitmap, subquery, CTE), times its loops, plus
    the rows that filters and rechecks removed: an upper bound on the rows a statement touched."""
    total = 0.0
    for node in nodes(plan):
        loops = node.get("Actual Loops", 0)
        if node["Node Type"].endswith("Scan"):
            total += node["Actual Rows"] * loops
        for removed in ("Rows Removed by Filter", "Rows Removed by Index Recheck", "Rows Removed by Join Filter"):
            total += node.get(removed, 0) * loops
    return round(total)


def indexes_read(plan: dict[str, Any]) -> set[str]:
    return {node["Index Name"] for node in nodes(plan) if "Index Name" in node and node.get("Actual Loops", 0) > 0}


# The index each class of text is read from, and the users found on each of its first three pages.
# Text rare by its matches but common by its trigrams' candidates walks the account.
WAYS_TAKEN = {text_class: "users_search_trgm_idx" for text_class in TEXTS} | {
    text_class: "users_search_walk_idx" for text_class in ("common early", "common late", "absent, common trigrams")
}
FOUND = {
    "common early": [25] * 3,
    "common late": [0] * 3,
    "rare": [5],
    "rare, common trigrams": [8],
    "absent": [0],
    "absent, common trigrams": [0] * 3,
}


@pytest.mark.parametrize("plans", ["custom", "generic"])
async def test_every_page_reads_at_most_5000_rows_for_every_class_of_text(searched_database, plans):
    conn = await asyncpg.connect(searched_database)
    try:
        if plans == "generic":
            await conn.execute("SET plan_cache_mode = force_generic_plan")
        explaining = ExplainingPool(conn, generic=plans == "generic")
        for text_class, text in TEXTS.items():
            after, pages = None, []
            for _ in range(3):
                explaining.plans = []
                page = await users.search_users(explaining, ACCOUNT, text, after, 25)  # type: ignore[arg-type]
                pages.append(page)
                for plan in explaining.plans:
                    assert rows_read(plan) <= ROW_LIMIT, (text_class, len(pages), json.dumps(plan, indent=1))
                    assert all(node["Node Type"] != "Seq Scan" for node in nodes(plan))
                read = set().union(*map(indexes_read, explaining.plans))
                assert WAYS_TAKEN[text_class] in read, (text_class, read)
                after = page.after
                if after is None:
                    break
            assert [len(page.users) for page in pages] == FOUND[text_class], text_class
    finally:
        await conn.close()


async def test_an_unbounded_plan_would_read_far_more_than_5000_rows(searched_database):
    """The account is large enough for the test above to mean something: common text has more
    matches than the limit, the first match of late text is further than the limit in name order,
    and the account's trigram scan for absent text with common trigrams reads more than the limit
    (its candidates, in the index and then in the table)."""
    conn = await asyncpg.connect(searched_database)
    try:
        for text in ("staff", "ann"):
            assert len(await conn.fetch(MATCHES, ACCOUNT, like_pattern(text))) > ROW_LIMIT
        first = await conn.fetchval(
            "SELECT count(*) FROM users WHERE account_id = $1 AND name < (SELECT min(name) FROM users "
            "WHERE account_id = $1 AND name ILIKE '%ann%')",
            ACCOUNT,
        )
        assert first > 10 * ROW_LIMIT
        trigram_scan = """
            EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM users
            WHERE account_id = $1 COLLATE "C" AND lower(name || E'\\n' || email) LIKE $2
        """
        explained = await conn.fetchval(trigram_scan, ACCOUNT, like_pattern(TEXTS["absent, common trigrams"]))
        plan = json.loads(explained)[0]["Plan"]
        assert indexes_read(plan) == {"users_search_trgm_idx"} and rows_read(plan) > ROW_LIMIT
    finally:
        await conn.close()


async def test_following_cursors_returns_exactly_the_matches_in_order(searched_database):
    pool = await db.create_pool(searched_database, min_size=1, max_size=1)
    try:
        for text in TEXTS.values():
            found, after = [], None
            while True:
                page = await users.search_users(pool, ACCOUNT, text, after, 100)
                found += [user.id for user in page.users]
                if page.after is None:
                    break
                after = page.after
            assert found == [row["id"] for row in await pool.fetch(MATCHES, ACCOUNT, like_pattern(text))], text
    finally:
        await pool.close()


# How a page may be made to take one way: the walk (any text is common), the trigram index (any
# text is rare), or the way the samples choose.
WAYS = {"walk": (0, 0), "trigrams": (10**6, 10**6), "sampled": users.SEARCH_COMMON}


async def follow(pool, text, size, walk, common):
    found, after = [], None
    while True:
        page = await users.search_users(pool, "acct-1", text, after, size, walk=walk, common=common)
        assert len(page.users) <= size
        found += [user.id for user in page.users]
        if page.after is None:
            return found
        after = page.after


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("walk", [3, 1000])
async def test_common_and_rare_text_find_the_same_users_in_order(pool, way, walk):
    # Every fourth user matches "common"; one in fifty matches "rare".
    for n in range(200):
        name = f"Person {n:03d}" + (" common" if n % 4 == 0 else "") + (" rare" if n % 50 == 0 else "")
        await add_user(pool, f"u{n:03d}", name=name)
    for text in ("common", "rare"):
        expected = [
            f"u{n:03d}" for n in range(200) if (text == "common" and n % 4 == 0) or (text == "rare" and n % 50 == 0)
        ]
        assert await follow(pool, text, 5, walk, WAYS[way]) == expected, text


# Names and e-mails from a few letters, in both cases and with LIKE's wildcards, so that short texts
# match some users and not others, and several users share a name.
LETTERS = "aAbB%_\\"
USERS = st.lists(
    st.tuples(st.text(LETTERS, min_size=1, max_size=6), st.text(LETTERS, max_size=6)), min_size=0, max_size=25
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    people=USERS,
    text=st.text(LETTERS, min_size=3, max_size=4),
    size=st.integers(1, 4),
    walk=st.integers(1, 6),
    way=st.sampled_from(list(WAYS)),
)
async def test_paging_returns_exactly_the_matches_in_order_for_any_data(pool, people, text, size, walk, way):
    await pool.execute("DELETE FROM users")
    await pool.execute(
        "INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id) "
        "SELECT 'u' || n, account, 'Academy', name, email, now(), gen_random_uuid() "
        "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(name, email, n), "
        "LATERAL (SELECT CASE WHEN n % 5 = 0 THEN 'acct-2' ELSE 'acct-1' END AS account) AS a",
        [name for name, _ in people],
        [email for _, email in people],
    )
    expected = [row["id"] for row in await pool.fetch(MATCHES, "acct-1", like_pattern(text))]
    assert await follow(pool, text, size, walk, WAYS[way]) == expected
