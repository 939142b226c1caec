"""The imported-resources listings: the deprecated per-user one and its successor."""

import pytest

from tests.factories import add_import, add_resource, at, login

IMPORTS = "/api/users/u1/imports"
RESOURCES = "/api/resources?onlyImported=true"


@pytest.fixture
async def session(pool):
    return await login(pool, "u1")


async def listed(client, session, url, **params):
    response = await client.get(url, params=params, headers={"X-Session-ID": session})
    assert response.status == 200, await response.text()
    return response, await response.json()


@pytest.mark.parametrize("url", [IMPORTS, RESOURCES])
async def test_newest_import_first_one_item_per_resource(client, pool, session, url):
    for rid in ("r1", "r2", "r3"):
        await add_resource(pool, rid)
    await add_import(pool, "u1", "r1", "c1", at(1))
    await add_import(pool, "u1", "r2", "c1", at(2))
    await add_import(pool, "u1", "r1", "c2", at(3))  # r1 again, in another course: now the newest
    await add_import(pool, "u1", "r3", "c1", at(0))
    await add_import(pool, "u2", "r3", "c9", at(9))  # someone else's
    await add_import(pool, "u1", "gone", "c1", at(5))  # a resource that no longer exists

    _, body = await listed(client, session, url)
    assert [item["id"] for item in body["items"]] == ["r1", "r2", "r3"]
    assert body["meta"] == {"cursor": None}


async def test_deprecated_listing_names_its_successor(client, pool, session):
    response, _ = await listed(client, session, IMPORTS)
    assert response.headers["Deprecation"].startswith("@")
    assert response.headers["Link"] == '</api/resources?onlyImported=true>; rel="successor-version"'


async def test_successor_is_not_deprecated(client, pool, session):
    response, _ = await listed(client, session, RESOURCES)
    assert "Deprecation" not in response.headers


@pytest.mark.parametrize("url", [IMPORTS, RESOURCES])
async def test_pages_are_stable_under_concurrent_imports(client, pool, session, url):
    for n in range(30):
        await add_resource(pool, f"r{n:02d}")
        await add_import(pool, "u1", f"r{n:02d}", "c1", at(n))
    await add_resource(pool, "late")

    seen, cursor, pages = [], None, 0
    while True:
        _, body = await listed(client, session, url, size=7, **({"cursor": cursor} if cursor else {}))
        assert len(body["items"]) <= 7
        seen += [item["id"] for item in body["items"]]
        if pages == 1:  # a new import lands mid-way: it is newer than every page already read
            await add_import(pool, "u1", "late", "c1", at(100))
        pages += 1
        cursor = body["meta"]["cursor"]
        if cursor is None:
            break
    assert seen == [f"r{n:02d}" for n in reversed(range(30))]
    assert pages == 5


async def test_size_bounds_the_page_and_default_is_24(client, pool, session):
    for n in range(25):
        await add_resource(pool, f"r{n:02d}")
        await add_import(pool, "u1", f"r{n:02d}", "c1", at(n))
    _, body = await listed(client, session, IMPORTS)
    assert len(body["items"]) == 24 and body["meta"]["cursor"]
    _, body = await listed(client, session, IMPORTS, size=100)
    assert len(body["items"]) == 25 and body["meta"]["cursor"] is None
    _, body = await listed(client, session, IMPORTS, size=25)
    assert len(body["items"]) == 25 and body["meta"]["cursor"] is None


async def test_equal_import_times_are_ordered_by_resource_id(client, pool, session):
    for rid in ("a", "b", "c"):
        await add_resource(pool, rid)
        await add_import(pool, "u1", rid, "c1", at(1))
    _, first = await listed(client, session, IMPORTS, size=2)
    _, second = await listed(client, session, IMPORTS, size=2, cursor=first["meta"]["cursor"])
    assert [i["id"] for i in first["items"] + second["items"]] == ["c", "b", "a"]
