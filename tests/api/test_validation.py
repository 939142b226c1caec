"""Bad input: every refusal is a 4xx application/problem+json (RFC 9457) that names what is at
fault, never a 500, and it changes nothing in the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
import json
from typing import Any

from aiohttp.test_utils import TestClient
import asyncpg
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
import jwt
import pytest

from core.settings import Settings
from tests.factories import JWT_SECRET, add_favorite, add_import, add_resource, add_user, at, claims, login, token

PROBLEM = "application/problem+json"
USER = "u1"
HEADERS_KEY = "X-Session-ID"

# Every paginated listing: (path, the query it needs besides cursor/size, its cursor family).
# The deprecated imports listing and its successor page through the same rows, so they share one.
LISTINGS: dict[str, tuple[str, dict[str, str], str]] = {
    "imports": (f"/api/users/{USER}/imports", {}, "imports"),
    "resources": ("/api/resources", {"onlyImported": "true"}, "imports"),
    "favorites": (f"/api/users/{USER}/favorites", {}, "favorites"),
    "updates": (f"/api/users/{USER}/updates", {}, "updates"),
    "users": ("/api/users", {"q": "user"}, "users"),
}
CROSS_LISTING = [
    (source, target) for source in LISTINGS for target in LISTINGS if LISTINGS[source][2] != LISTINGS[target][2]
]
FAVORITES = f"/api/users/{USER}/favorites"


# --- helpers ---------------------------------------------------------------------------------


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[str]]:
    """Every row of every table, to show that a refused request changed nothing."""
    tables = await pool.fetch(
        "SELECT quote_ident(tablename) AS name FROM pg_tables "
        "WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    return {
        t["name"]: sorted(
            await pool.fetchval(f"SELECT coalesce(array_agg(to_jsonb(t)::text), '{{}}') FROM {t['name']} t")
        )
        for t in tables
    }


async def assert_problem(
    response: Any, status: int, field: str | None = None, location: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem with that status; when `field` is given, `errors[]` names it (at `location`)."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM, text
    problem = json.loads(text)
    for member, kind in (("type", str), ("title", str), ("status", int), ("detail", str)):
        assert isinstance(problem.get(member), kind), problem
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert "Traceback" not in text
    if field is not None:
        errors = problem.get("errors")
        assert errors, problem
        for error in errors:
            assert {"field", "location", "message"} <= error.keys(), error
        assert any(
            error["field"] == field and (location is None or error["location"] == location) for error in errors
        ), errors
    return problem


async def assert_no_server_error(response: Any) -> None:
    assert response.status < 500, await response.text()
    if response.status >= 400:
        assert response.content_type == PROBLEM
        problem = await response.json()
        assert problem["status"] == response.status


def flip(text: str, index: int) -> str:
    """`text` with the base64url character at `index` replaced by another one."""
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.fixture
async def world(pool: asyncpg.Pool) -> dict[str, str]:
    """An admin user with three imports (each with an available update), three favorites and four
    users of their account to find: enough for two pages of every listing at size=2. Returns the
    session headers."""
    session = await login(pool, USER, isAdmin=True)
    for n, rid in enumerate(("r1", "r2", "r3")):
        await add_resource(pool, rid)
        await add_import(pool, USER, rid, f"course-{n}", at(n))
        await add_resource(pool, rid, version=2, published_at=at(10 + n))
        await add_favorite(pool, USER, rid, at(n))
    for uid in ("u2", "u3", "u4"):
        await add_user(pool, uid)
    return {HEADERS_KEY: session}


async def first_cursor(client: TestClient, listing: str, headers: dict[str, str]) -> str:
    path, query, _ = LISTINGS[listing]
    response = await client.get(path, params={**query, "size": "2"}, headers=headers)
    assert response.status == 200, await response.text()
    cursor = (await response.json())["meta"]["cursor"]
    assert cursor, f"{listing} should have a second page"
    return cursor


# --- pagination parameters -------------------------------------------------------------------


@pytest.mark.parametrize("listing", LISTINGS)
async def test_listing_fixture_pages_through(client, world, listing):
    """The valid case the refusals below are set against: a real cursor gives the next page."""
    path, query, _ = LISTINGS[listing]
    cursor = await first_cursor(client, listing, world)
    response = await client.get(path, params={**query, "size": "2", "cursor": cursor}, headers=world)
    assert response.status == 200
    assert (await response.json())["items"]


@pytest.mark.parametrize("size", ["0", "101", "-1", "abc", "1.5", ""])
@pytest.mark.parametrize("listing", LISTINGS)
async def test_bad_size(client, pool, world, listing, size):
    path, query, _ = LISTINGS[listing]
    before = await snapshot(pool)
    response = await client.get(path, params={**query, "size": size}, headers=world)
    await assert_problem(response, 400, "size", "query")
    assert await snapshot(pool) == before


@pytest.mark.parametrize("cursor", ["abc", "a.b.c", "!!!", "", "é.é", "....", "."])
@pytest.mark.parametrize("listing", LISTINGS)
async def test_malformed_cursor(client, pool, world, listing, cursor):
    path, query, _ = LISTINGS[listing]
    before = await snapshot(pool)
    response = await client.get(path, params={**query, "cursor": cursor}, headers=world)
    await assert_problem(response, 400, "cursor", "query")
    assert await snapshot(pool) == before


@pytest.mark.parametrize("part", ["payload", "signature"])
@pytest.mark.parametrize("listing", LISTINGS)
async def test_tampered_cursor(client, pool, world, listing, part):
    path, query, _ = LISTINGS[listing]
    payload, signature = (await first_cursor(client, listing, world)).split(".")
    if part == "payload":
        tampered = flip(payload, len(payload) // 2) + "." + signature
    else:
        tampered = payload + "." + flip(signature, len(signature) // 2)
    before = await snapshot(pool)
    response = await client.get(path, params={**query, "cursor": tampered}, headers=world)
    await assert_problem(response, 400, "cursor", "query")
    assert await snapshot(pool) == before


@pytest.mark.parametrize(("source", "target"), CROSS_LISTING)
async def test_cursor_of_another_listing(client, pool, world, source, target):
    cursor = await first_cursor(client, source, world)
    path, query, _ = LISTINGS[target]
    before = await snapshot(pool)
    response = await client.get(path, params={**query, "cursor": cursor}, headers=world)
    await assert_problem(response, 400, "cursor", "query")
    assert await snapshot(pool) == before


# --- GET /api/resources ----------------------------------------------------------------------


@pytest.mark.parametrize("query", [{}, {"onlyImported": "false"}, {"onlyImported": "maybe"}, {"onlyImported": ""}])
async def test_resources_needs_only_imported(client, world, query):
    response = await client.get("/api/resources", params=query, headers=world)
    await assert_problem(response, 400, "onlyImported", "query")


# --- GET /api/users --------------------------------------------------------------------------


async def test_search_needs_q(client, world):
    response = await client.get("/api/users", headers=world)
    await assert_problem(response, 400, "q", "query")


@pytest.mark.parametrize("q", ["u", "us", ""])
async def test_short_q_finds_nothing(client, world, q):
    # "use" finds all four users ("User u1", ...): a shorter q is deliberately an empty page.
    found = await client.get("/api/users", params={"q": "use"}, headers=world)
    assert len((await found.json())["items"]) == 4
    response = await client.get("/api/users", params={"q": q}, headers=world)
    assert response.status == 200
    assert await response.json() == {"items": [], "meta": {"cursor": None}}


@pytest.mark.parametrize("length", [201, 2000])
async def test_overlong_q(client, world, length):
    response = await client.get("/api/users", params={"q": "u" * length}, headers=world)
    await assert_problem(response, 400, "q", "query")


@pytest.mark.parametrize("q", ["use\x00r", "\x00\x00\x00"])
async def test_q_with_nul_is_not_a_server_error(client, world, q):
    """PostgreSQL text cannot hold NUL: such a q is bad input, not a crash."""
    response = await client.get("/api/users", params={"q": q}, headers=world)
    await assert_no_server_error(response)


# --- POST /api/users/{userId}/favorites ------------------------------------------------------

BAD_FAVORITE_BODIES = {
    # id: (raw body or None, content type or None, field expected in errors[])
    "no body": (None, None, "body"),
    "not JSON": (b'{"resourceId": ', "application/json", "body"),
    "not UTF-8": (b'{"resourceId": "\xff"}', "application/json", "body"),
    "JSON array": (b'["r1"]', "application/json", "body"),
    "JSON string": (b'"r1"', "application/json", "body"),
    "empty object": (b"{}", "application/json", "resourceId"),
    "number": (b'{"resourceId": 1}', "application/json", "resourceId"),
    "null": (b'{"resourceId": null}', "application/json", "resourceId"),
    "list": (b'{"resourceId": ["r1"]}', "application/json", "resourceId"),
    "empty string": (b'{"resourceId": ""}', "application/json", "resourceId"),
    "unknown field": (b'{"resourceId": "r1", "colour": "red"}', "application/json", "colour"),
    "text/plain": (b'{"resourceId": "r1"}', "text/plain", None),
}


@pytest.mark.parametrize(
    ("body", "content_type", "field"), BAD_FAVORITE_BODIES.values(), ids=BAD_FAVORITE_BODIES.keys()
)
async def test_bad_favorite_body(client, pool, world, body, content_type, field):
    await pool.execute("DELETE FROM favorites")
    before = await snapshot(pool)
    headers = {**world, **({"Content-Type": content_type} if content_type else {})}
    response = await client.post(FAVORITES, data=body, headers=headers)
    await assert_problem(response, 400, field, None if field is None else "body")
    assert await snapshot(pool) == before
    # The same user can mark r1 with a good body: the refusal was about the body alone.
    good = await client.post(FAVORITES, json={"resourceId": "r1"}, headers=world)
    assert good.status == 201


def padded_favorite(total: int) -> bytes:
    """A valid favorite body of exactly `total` bytes (JSON whitespace pads it)."""
    body = b'{"resourceId": "r1"}'
    return body[:-1] + b" " * (total - len(body)) + b"}"


async def test_body_over_the_limit_is_413(client, pool, world, settings: Settings):
    await pool.execute("DELETE FROM favorites")
    before = await snapshot(pool)
    headers = {**world, "Content-Type": "application/json"}
    response = await client.post(FAVORITES, data=padded_favorite(settings.max_body_bytes + 1), headers=headers)
    await assert_problem(response, 413)
    assert await snapshot(pool) == before


async def test_body_at_the_limit_is_accepted(client, pool, world, settings: Settings):
    headers = {**world, "Content-Type": "application/json"}
    response = await client.post(FAVORITES, data=padded_favorite(settings.max_body_bytes), headers=headers)
    assert response.status == 201, await response.text()


@pytest.mark.parametrize("with_session", [True, False], ids=["session header", "no session"])
async def test_deeply_nested_body_is_not_a_server_error(client, pool, world, with_session):
    """JSON nested deeper than the parser's recursion limit, inside the body limit. Without a
    session header the body is searched for a `sessionId` before the handler runs."""
    await pool.execute("DELETE FROM favorites")
    before = await snapshot(pool)
    headers = {**(world if with_session else {}), "Content-Type": "application/json"}
    response = await client.post(FAVORITES, data=b"[" * 50_000, headers=headers)
    await assert_problem(response, 400 if with_session else 401)
    assert await snapshot(pool) == before


# --- POST /api/users/{userId}/updates/{resourceId}/ignore -------------------------------------

IGNORE = f"/api/users/{USER}/updates/r1/ignore"
BAD_IGNORE_BODIES = {
    # id: (raw body, content type, field expected in errors[])
    "not JSON": (b'{"courseIds": [', "application/json", "body"),
    "JSON array": (b'["course-0"]', "application/json", "body"),
    "courseIds a string": (b'{"courseIds": "course-0"}', "application/json", "courseIds"),
    "courseIds of numbers": (b'{"courseIds": [0]}', "application/json", "courseIds.0"),
    "empty course id": (b'{"courseIds": [""]}', "application/json", "courseIds.0"),
    "unknown field": (b'{"courseIds": ["course-0"], "all": true}', "application/json", "all"),
    "course not pending": (b'{"courseIds": ["course-0", "course-9"]}', "application/json", "courseIds"),
    "text/plain": (b'{"courseIds": ["course-0"]}', "text/plain", None),
}


@pytest.mark.parametrize(("body", "content_type", "field"), BAD_IGNORE_BODIES.values(), ids=BAD_IGNORE_BODIES.keys())
async def test_bad_ignore_body(client, pool, world, body, content_type, field):
    before = await snapshot(pool)
    response = await client.post(IGNORE, data=body, headers={**world, "Content-Type": content_type})
    await assert_problem(response, 400, field, None if field is None else "body")
    assert await snapshot(pool) == before
    # The update was there to ignore: a good body does.
    good = await client.post(IGNORE, json={"courseIds": ["course-0"]}, headers=world)
    assert good.status == 204


# --- POST /api/sessions ----------------------------------------------------------------------

BAD_SESSION_BODIES = {
    "no body": (None, "body"),
    "not JSON": (b"jwt_token=abc", "body"),
    "missing jwt_token": (b"{}", "jwt_token"),
    "number": (b'{"jwt_token": 42}', "jwt_token"),
    "null": (b'{"jwt_token": null}', "jwt_token"),
    "empty": (b'{"jwt_token": ""}', "jwt_token"),
    "extra field": (json.dumps({"jwt_token": token("u9"), "remember": True}).encode(), "remember"),
}


async def assert_no_user_nor_session(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT count(*) FROM users") == 0
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 0


@pytest.mark.parametrize(("body", "field"), BAD_SESSION_BODIES.values(), ids=BAD_SESSION_BODIES.keys())
async def test_bad_session_body(client, pool, body, field):
    response = await client.post(
        "/api/sessions", data=body, headers={"Content-Type": "application/json"} if body else {}
    )
    await assert_problem(response, 400, field, "body")
    await assert_no_user_nor_session(pool)


def _without(claim: str) -> str:
    payload = claims("u9")
    del payload[claim]
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


BAD_TOKENS = {
    "not a JWT": lambda: "not-a-jwt",
    "three dots": lambda: "a.b.c",
    "another key": lambda: token("u9", key="another-secret-of-32-characters!"),
    "expired": lambda: token("u9", exp=int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())),
    "alg none": lambda: jwt.encode(claims("u9"), "", algorithm="none"),
    "payload not an object": lambda: jwt.api_jws.encode(b"[1, 2]", JWT_SECRET, algorithm="HS256"),
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_refused_token(client, pool, make_token):
    response = await client.post("/api/sessions", json={"jwt_token": make_token()})
    await assert_problem(response, 401)
    await assert_no_user_nor_session(pool)


@pytest.mark.parametrize("claim", ["accountId", "accountName", "name", "email", "sub", "exp"])
async def test_token_missing_a_claim(client, pool, claim):
    response = await client.post("/api/sessions", json={"jwt_token": _without(claim)})
    await assert_problem(response, 401, claim, "token")
    await assert_no_user_nor_session(pool)


async def test_token_claim_with_nul_is_not_a_server_error(client, pool):
    """A correctly signed token whose name PostgreSQL cannot store."""
    response = await client.post("/api/sessions", json={"jwt_token": token("u9", name="Bad\x00Name")})
    await assert_no_server_error(response)
    if response.status >= 400:
        await assert_no_user_nor_session(pool)


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope", "/nope", "/api/users/u1/favorites/r1/extra"])
async def test_unknown_route(client, world, path):
    await assert_problem(await client.get(path, headers=world), 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", FAVORITES, {"GET", "POST"}),
        ("PATCH", FAVORITES, {"GET", "POST"}),
        ("POST", f"{FAVORITES}/r1", {"DELETE"}),
        ("DELETE", "/api/sessions", {"POST"}),
    ],
)
async def test_wrong_method(client, pool, world, method, path, allowed):
    before = await snapshot(pool)
    response = await client.request(method, path, headers=world, json={"resourceId": "r1"})
    await assert_problem(response, 405)
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}
    assert await snapshot(pool) == before


# --- no 500, whatever is sent -----------------------------------------------------------------

# Arbitrary text: runs of any characters (a URL cannot carry lone surrogates) mixed with those that
# matter to URLs, LIKE patterns, base64 cursors and PostgreSQL, drawn more often than chance would.
TEXT = st.lists(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8) | st.sampled_from(list("\x00%_\\.=&+-é")),
    min_size=1,
    max_size=10,
).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"resourceId": JSON_VALUES}).map(lambda value: json.dumps(value).encode()),
    # Runs of one JSON token: deep nesting, long strings and numbers. Lengths by orders of magnitude,
    # so that a failure does not shrink onto a boundary that moves with the stack depth.
    st.builds(
        lambda token, count: token * count,
        st.sampled_from([b"[", b'{"a":', b"9", b'"\\', b" "]),
        st.sampled_from([30, 3_000, 10_000]),
    ),
)
# A fixed seed: every run, CI's included, tries the same inputs, so a verdict does not flip by chance.
FUZZ = hypothesis_settings(
    max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(listing=st.sampled_from(list(LISTINGS)), name=st.sampled_from(["size", "cursor", "q"]), value=TEXT)
async def test_arbitrary_query_values(client, world, listing, name, value):
    path, query, _ = LISTINGS[listing]
    if listing != "users" and name == "q":
        path, query = LISTINGS["users"][:2]
    response = await client.get(path, params={**query, name: value}, headers=world)
    await assert_no_server_error(response)


@FUZZ
@given(body=BODIES)
async def test_arbitrary_favorite_bodies(client, world, body):
    response = await client.post(FAVORITES, data=body, headers={**world, "Content-Type": "application/json"})
    await assert_no_server_error(response)
