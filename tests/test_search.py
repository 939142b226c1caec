"""User search: account-scoped, case-insensitive substring of name or e-mail, ordered by name,
keyset-paginated, and answered from the trigram indexes."""

import json

import pytest

from service import queries
from service.handlers.users import like_pattern
from tests.factories import add_user, login


async def search(client, session, q, **params):
    response = await client.get("/api/users", params={"q": q, **params}, headers={"X-Session-ID": session})
    return response.status, await response.json()


async def test_matches_name_or_email_case_insensitively_in_own_account_only(client, pool):
    admin = await login(pool, "admin", isAdmin=True, name="Zed Admin", email="zed@academy.edu")
    await add_user(pool, "u1", name="Ada Lovelace", email="countess@engine.org")
    await add_user(pool, "u2", name="Bob Stone", email="ADAMANT@rock.org")
    await add_user(pool, "u3", name="Carla Dante", email="carla@example.org")
    await add_user(pool, "u4", name="Adam Other", email="adam@other.org", account_id="acct-2")

    status, body = await search(client, admin, "aDa")
    assert status == 200
    assert [u["id"] for u in body["items"]] == ["u1", "u2"]  # by name; u3 ("Dante") lacks "ada"
    assert body["items"][0] == {"id": "u1", "name": "Ada Lovelace", "email": "countess@engine.org",
                                "avatarUrl": None, "accountId": "acct-1"}
    assert body["meta"]["cursor"] is None


@pytest.mark.parametrize("q", ["%%%", "___", "a\\%"])
async def test_like_wildcards_are_literal(client, pool, q):
    admin = await login(pool, "admin", isAdmin=True)
    await add_user(pool, "u1", name="Percent %%% Underscore ___ Slash a\\%")
    await add_user(pool, "u2", name="Plain Name")
    status, body = await search(client, admin, q)
    assert [u["id"] for u in body["items"]] == ["u1"]


def test_like_pattern_escapes():
    assert like_pattern("a%b_c\\") == "%a\\%b\\_c\\\\%"


async def test_group_managers_search_too(client, pool):
    manager = await login(pool, "m", roles=["group_manager"])
    await add_user(pool, "u1", name="Ada Lovelace")
    status, body = await search(client, manager, "love")
    assert status == 200 and [u["id"] for u in body["items"]] == ["u1"]


async def test_pages_follow_name_order_under_concurrent_inserts(client, pool):
    admin = await login(pool, "admin", isAdmin=True, name="Zz Admin")
    names = [f"Teacher {n:03d}" for n in range(0, 60, 2)]  # even numbers
    for n, name in enumerate(names):
        await add_user(pool, f"t{n:03d}", name=name)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"size": 7, **({"cursor": cursor} if cursor else {})}
        status, body = await search(client, admin, "teacher", **params)
        assert status == 200
        seen += [u["name"] for u in body["items"]]
        pages += 1
        # Someone joins before and after the current position: never a duplicate or a gap.
        await add_user(pool, f"x{pages}", name=f"Teacher {pages * 2 + 1:03d}")
        cursor = body["meta"]["cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen)
    assert set(names) <= set(seen)


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


@pytest.mark.parametrize("continued", [False, True])
@pytest.mark.parametrize(("strategy", "indexes"), [
    ("walk", ["users_account_name_idx"]),
    ("trigram", ["users_name_trgm_idx", "users_email_trgm_idx"]),
])
async def test_search_plans_use_indexes_not_a_sequential_scan(pool, big_account, strategy, indexes, continued):
    sql = queries.search_users_sql(strategy=strategy, continued=continued)
    args = ["acct-0", like_pattern("7f3a"), 25, *(["Person 7", "u1"] if continued else [])]
    args += [queries.SEARCH_WALK] if strategy == "walk" else []
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
        expected = [f"u{n:03d}" for n in range(200) if text == "common" and n % 4 == 0 or text == "rare" and n % 50 == 0]
        found, after = [], None
        while True:
            rows = await queries.search_users(pool, "acct-1", like_pattern(text), after, 6, walk=walk)
            found += [r["id"] for r in rows[:5]]
            if len(rows) <= 5:
                break
            after = (rows[4]["name"], rows[4]["id"])
        assert found == expected, text
