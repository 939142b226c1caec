"""User search: account-scoped, case-insensitive substring of name or e-mail, ordered by name,
keyset-paginated."""

import pytest

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
    assert body["items"][0] == {
        "id": "u1",
        "name": "Ada Lovelace",
        "email": "countess@engine.org",
        "avatarUrl": None,
        "accountId": "acct-1",
    }
    assert body["meta"]["cursor"] is None


@pytest.mark.parametrize("q", ["%%%", "___", "a\\%"])
async def test_like_wildcards_are_literal(client, pool, q):
    admin = await login(pool, "admin", isAdmin=True)
    await add_user(pool, "u1", name="Percent %%% Underscore ___ Slash a\\%")
    await add_user(pool, "u2", name="Plain Name")
    _status, body = await search(client, admin, q)
    assert [u["id"] for u in body["items"]] == ["u1"]


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


async def test_a_page_may_be_short_yet_have_a_cursor_and_following_it_finds_every_match(client, pool):
    """Common text whose matches come late in name order: a page walks a bounded number of users,
    so the first pages hold no match but a cursor; following it finds every match, in order."""
    admin = await login(pool, "admin", isAdmin=True, name="Admin", email="admin@academy.edu")
    await pool.execute(
        "INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id) "
        "SELECT id, 'acct-1', 'Academy One', name, id || '@academy.edu', now(), gen_random_uuid() "
        "FROM (SELECT 'a' || n, format('Abe %s', to_char(n, 'FM00000')) FROM generate_series(1, 3000) AS n "
        "      UNION ALL SELECT 'z' || n, format('Zed Dense %s', to_char(n, 'FM00000')) "
        "      FROM generate_series(1, 2500) AS n) AS u(id, name)"
    )
    status, first = await search(client, admin, "dense", size=100)
    assert status == 200
    assert first["items"] == [] and first["meta"]["cursor"] is not None

    seen, cursor = [], first["meta"]["cursor"]
    while cursor is not None:
        status, body = await search(client, admin, "dense", size=100, cursor=cursor)
        assert status == 200 and len(body["items"]) <= 100
        seen += [u["id"] for u in body["items"]]
        cursor = body["meta"]["cursor"]
    assert seen == [f"z{n}" for n in range(1, 2501)]
