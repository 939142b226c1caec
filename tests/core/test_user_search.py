"""User search's two statements: the walk over the name index and the trigram step, each on its
indexes, and both finding the same users in the same order."""

import json

import pytest

from core import users
from core.users import like_pattern
from tests.factories import add_user


def test_like_pattern_escapes():
    assert like_pattern("a%b_c\\") == "%a\\%b\\_c\\\\%"


@pytest.fixture
async def big_account(pool):
    """20,000 users in one account and 20,000 in another, vacuumed and analyzed: the steady state
    the planner sees in production."""
    await pool.execute(
        """
        INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)
        SELECT 'u' || n, 'acct-' || (n % 2), 'Academy', 'Person ' || md5(n::text), md5(n::text) || '@x.edu', now(),
               gen_random_uuid()
        FROM generate_series(1, 40000) AS n
        """
    )
    await pool.execute("VACUUM ANALYZE users")


@pytest.mark.parametrize("after", [(None, None), ("Person 7", "u1")], ids=["first page", "continued"])
@pytest.mark.parametrize(
    ("sql", "indexes"),
    [
        pytest.param(users.SEARCH_BY_WALK, ["users_account_name_idx"], id="walk"),
        pytest.param(users.SEARCH_BY_TRIGRAMS, ["users_name_trgm_idx", "users_email_trgm_idx"], id="trigram"),
    ],
)
async def test_search_plans_use_indexes_not_a_sequential_scan(pool, big_account, sql, indexes, after):
    args = ["acct-0", like_pattern("7f3a"), *after, 25]
    args += [users.SEARCH_WALK] if sql == users.SEARCH_BY_WALK else []
    plan = json.dumps(await pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
    assert "Seq Scan" not in plan
    assert all(index in plan for index in indexes)


@pytest.mark.parametrize("walk", [3, 1000])
async def test_common_and_rare_text_find_the_same_users_in_order(pool, walk):
    # Every fourth user matches "common"; one in fifty matches "rare".
    for n in range(200):
        name = f"Person {n:03d}" + (" common" if n % 4 == 0 else "") + (" rare" if n % 50 == 0 else "")
        await add_user(pool, f"u{n:03d}", name=name)
    for text in ("common", "rare"):
        expected = [
            f"u{n:03d}" for n in range(200) if (text == "common" and n % 4 == 0) or (text == "rare" and n % 50 == 0)
        ]
        found, after = [], None
        while True:
            rows = await users.search_users(pool, "acct-1", text, after, 6, walk=walk)
            found += [r["id"] for r in rows[:5]]
            if len(rows) <= 5:
                break
            after = (rows[4]["name"], rows[4]["id"])
        assert found == expected, text
