"""The updates endpoints: list, one, ignore (README: "Endpoints", "Updates and ignores")."""

import pytest

from tests.factories import T0, add_resource, apply, at, deleted, imported, login, published

UPDATES = "/api/users/u1/updates"


@pytest.fixture
async def headers(pool):
    return {"X-Session-ID": await login(pool, "u1")}


async def get(client, headers, url, **params):
    response = await client.get(url, params=params, headers=headers)
    return response.status, await response.json()


async def ignore(client, headers, resource_id, body=None):
    kwargs = {"json": body} if body is not None else {}
    response = await client.post(f"{UPDATES}/{resource_id}/ignore", headers=headers, **kwargs)
    return response.status, await response.read()


async def pending(client, headers, resource_id):
    status, body = await get(client, headers, f"{UPDATES}/{resource_id}")
    return [c["courseId"] for c in body["courses"]] if status == 200 else None


@pytest.fixture
async def two_courses(pool):
    """u1 holds version 1 of r1 in courses c1 and c2; version 2 is out."""
    await apply(
        pool,
        published("r1", 1, at_time=at(0)),
        imported("u1", "r1", "c1", at(1)),
        imported("u1", "r1", "c2", at(2)),
        published("r1", 2, at_time=at(10)),
    )


async def test_one_update_shape(client, headers, two_courses):
    status, body = await get(client, headers, f"{UPDATES}/r1")
    assert status == 200
    assert body == {
        "versionId": "r1-v2",
        "versionNotes": "Notes of version 2",
        "createDate": "2026-01-01T00:10:00Z",
        "updateDate": "2026-01-01T00:10:00Z",
        "courses": [
            {
                "courseId": "c2",
                "courseName": "Course c2",
                "importDate": "2026-01-01T00:02:00Z",
                "versionCreateDate": "2026-01-01T00:00:00Z",
            },
            {
                "courseId": "c1",
                "courseName": "Course c1",
                "importDate": "2026-01-01T00:01:00Z",
                "versionCreateDate": "2026-01-01T00:00:00Z",
            },
        ],
        "resource": {
            "id": "r1",
            "title": "Resource r1",
            "description": "About r1",
            "type": "assignment",
            "account": {"id": "acct-1", "name": "Academy One"},
            "authors": [{"id": "author-1", "name": "An Author", "avatarUrl": None}],
            "tags": ["math"],
            "thumbnail": {"url": "https://img.example/r1.png", "description": "thumbnail"},
            "createDate": "2026-01-01T00:00:00Z",
            "updateDate": "2026-01-01T00:10:00Z",
            "versionId": "r1-v2",
        },
    }
    status, listed = await get(client, headers, UPDATES)
    assert listed == {"items": [body], "meta": {"cursor": None}}


async def test_no_update_is_404(client, headers, pool):
    await apply(pool, published("current", 2), imported("u1", "current", "c1", at(1), version=2))
    for resource_id in ("current", "never-imported", "unknown"):
        status, problem = await get(client, headers, f"{UPDATES}/{resource_id}")
        assert status == 404 and problem["status"] == 404
        status, _ = await ignore(client, headers, resource_id)
        assert status == 404


async def test_newest_version_first_with_pages(client, headers, pool):
    for n in range(7):
        await apply(
            pool,
            published(f"r{n}", 1),
            imported("u1", f"r{n}", "c1", at(1)),
            published(f"r{n}", 2, at_time=at(100 + n)),
        )
    seen, cursor = [], None
    while True:
        status, body = await get(client, headers, UPDATES, size=3, **({"cursor": cursor} if cursor else {}))
        assert status == 200 and len(body["items"]) <= 3
        seen += [item["resource"]["id"] for item in body["items"]]
        cursor = body["meta"]["cursor"]
        if cursor is None:
            break
    assert seen == [f"r{n}" for n in reversed(range(7))]


@pytest.mark.parametrize("body", [None, {}, {"courseIds": []}, {"courseIds": None}])
async def test_ignoring_without_courses_ignores_every_pending_one(client, headers, two_courses, body):
    assert (await ignore(client, headers, "r1", body)) == (204, b"")
    assert await pending(client, headers, "r1") is None
    _status, listed = await get(client, headers, UPDATES)
    assert listed["items"] == []


async def test_ignoring_some_courses_keeps_the_others(client, headers, two_courses):
    assert (await ignore(client, headers, "r1", {"courseIds": ["c1"]}))[0] == 204
    assert await pending(client, headers, "r1") == ["c2"]
    assert (await ignore(client, headers, "r1", {"courseIds": ["c2"]}))[0] == 204
    assert await pending(client, headers, "r1") is None


@pytest.mark.parametrize("course_ids", [["c3"], ["c1", "c3"], ["c1", "c1", "nope"]])
async def test_ignoring_a_course_that_is_not_pending_is_400_and_changes_nothing(
    client, headers, pool, two_courses, course_ids
):
    await apply(pool, imported("u1", "r1", "c3", at(20), version=2))  # c3 holds the latest: not pending
    status, body = await ignore(client, headers, "r1", {"courseIds": course_ids})
    assert status == 400
    assert b'"field":"courseIds"' in body
    assert await pending(client, headers, "r1") == ["c2", "c1"]
    assert await pool.fetchval("SELECT count(*) FROM imports WHERE ignored_version_number IS NOT NULL") == 0


async def test_a_newer_version_makes_an_ignored_course_pending_again(client, headers, pool, two_courses):
    await ignore(client, headers, "r1", {"courseIds": ["c1"]})
    await apply(pool, published("r1", 3, at_time=at(30)))
    assert await pending(client, headers, "r1") == ["c2", "c1"]
    _status, body = await get(client, headers, f"{UPDATES}/r1")
    assert body["versionId"] == "r1-v3"


async def test_reimporting_the_latest_version_makes_a_course_current(client, headers, pool, two_courses):
    await apply(pool, imported("u1", "r1", "c1", at(40), version=2))
    assert await pending(client, headers, "r1") == ["c2"]
    await apply(pool, imported("u1", "r1", "c2", at(41), version=2))
    assert await pending(client, headers, "r1") is None


async def test_a_deleted_resource_has_no_update(client, headers, pool, two_courses):
    await apply(pool, deleted("r1", at(50)))
    assert await pending(client, headers, "r1") is None
    await apply(pool, published("r1", 4, at_time=at(60)))  # a deletion is final
    assert await pending(client, headers, "r1") is None


async def test_held_version_unknown_here_has_null_create_date(client, headers, pool):
    await add_resource(pool, "r1", version=5, published_at=T0)
    await apply(pool, imported("u1", "r1", "c1", at(1), version=2))  # version 2 was never published here
    _status, body = await get(client, headers, f"{UPDATES}/r1")
    assert body["courses"][0]["versionCreateDate"] is None


async def test_updates_are_per_user(client, headers, pool, two_courses):
    other = {"X-Session-ID": await login(pool, "u2")}
    await apply(pool, imported("u2", "r1", "c9", at(3)))
    assert await pending(client, headers, "r1") == ["c2", "c1"]
    _status, body = await get(client, other, "/api/users/u2/updates/r1")
    assert [c["courseId"] for c in body["courses"]] == ["c9"]
    assert (await get(client, headers, "/api/users/u2/updates"))[0] == 403
