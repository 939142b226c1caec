"""Favorites: list, mark (idempotent, 201 with the whole list), unmark (idempotent)."""

from tests.factories import add_favorite, add_resource, at, login


async def test_mark_list_and_unmark(client, pool):
    session = await login(pool, "u1")
    headers = {"X-Session-ID": session}
    for rid in ("r1", "r2", "r3"):
        await add_resource(pool, rid)

    for rid in ("r1", "r2"):
        response = await client.post("/api/users/u1/favorites", json={"resourceId": rid}, headers=headers)
        assert response.status == 201
    body = await response.json()
    assert [item["id"] for item in body["items"]] == ["r2", "r1"]
    assert body["meta"] == {"cursor": None}

    again = await client.post("/api/users/u1/favorites", json={"resourceId": "r1"}, headers=headers)
    assert again.status == 201
    assert [item["id"] for item in (await again.json())["items"]] == ["r2", "r1"]

    listed = await client.get("/api/users/u1/favorites", headers=headers)
    assert listed.status == 200
    assert [item["id"] for item in (await listed.json())["items"]] == ["r2", "r1"]

    for _ in range(2):
        deleted = await client.delete("/api/users/u1/favorites/r2", headers=headers)
        assert deleted.status == 204
        assert await deleted.read() == b""
    listed = await client.get("/api/users/u1/favorites", headers=headers)
    assert [item["id"] for item in (await listed.json())["items"]] == ["r1"]


async def test_resource_shape(client, pool):
    session = await login(pool, "u1")
    await add_resource(pool, "r1", version=3)
    await add_favorite(pool, "u1", "r1", at(5))
    response = await client.get("/api/users/u1/favorites", headers={"X-Session-ID": session})
    assert response.content_type == "application/json"
    assert (await response.json())["items"] == [
        {
            "id": "r1",
            "title": "Resource r1",
            "description": "About r1",
            "type": "assignment",
            "account": {"id": "acct-1", "name": "Academy One"},
            "authors": [{"id": "author-1", "name": "An Author", "avatarUrl": None}],
            "tags": ["math"],
            "thumbnail": {"url": "https://img.example/r1.png", "description": "thumbnail"},
            "createDate": "2026-01-01T00:00:00Z",
            "updateDate": "2026-01-01T00:00:00Z",
            "versionId": "r1-v3",
        }
    ]


async def test_unknown_resource_is_404_and_changes_nothing(client, pool):
    session = await login(pool, "u1")
    response = await client.post(
        "/api/users/u1/favorites", json={"resourceId": "nope"}, headers={"X-Session-ID": session}
    )
    assert response.status == 404
    problem = await response.json()
    assert problem["errors"][0]["field"] == "resourceId"
    assert await pool.fetchval("SELECT count(*) FROM favorites") == 0


async def test_pages_are_stable_under_concurrent_marks(client, pool):
    session = await login(pool, "u1")
    headers = {"X-Session-ID": session}
    for n in range(20):
        await add_resource(pool, f"r{n:02d}")
        await add_favorite(pool, "u1", f"r{n:02d}", at(n))
    await add_resource(pool, "new")

    seen, cursor = [], None
    while True:
        params = {"size": 6, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/users/u1/favorites", params=params, headers=headers)
        body = await response.json()
        seen += [item["id"] for item in body["items"]]
        if len(seen) == 6:  # marked while paging: newer than everything already read
            await client.post("/api/users/u1/favorites", json={"resourceId": "new"}, headers=headers)
        cursor = body["meta"]["cursor"]
        if cursor is None:
            break
    assert seen == [f"r{n:02d}" for n in reversed(range(20))]


async def test_deleted_resources_leave_the_favorites(client, pool):
    session = await login(pool, "u1")
    await add_resource(pool, "r1")
    await add_resource(pool, "r2")
    await add_favorite(pool, "u1", "r1", at(1))
    await add_favorite(pool, "u1", "r2", at(2))
    await pool.execute("DELETE FROM resources WHERE id = 'r2'")
    response = await client.get("/api/users/u1/favorites", headers={"X-Session-ID": session})
    assert [item["id"] for item in (await response.json())["items"]] == ["r1"]
