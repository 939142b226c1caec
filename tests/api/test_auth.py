"""Authentication and authorization: who may call what, where the session id comes from (and which
source wins), the CSRF Origin check on cookie sessions, and session ids kept out of the access log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
import itertools
import json
import logging
import secrets
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
import asyncpg
import pytest

from core.sessions import hash_session_id
from service.access_log import AccessLogger
from service.app import create_app
from service.auth import public
from tests.factories import add_favorite, add_import, add_resource, add_user, at, login, make_settings

SOURCES = ("cookie", "header", "session-id", "state", "body")  # the documented order
ADJACENT = [pytest.param(first, second, id=f"{first} over {second}") for first, second in itertools.pairwise(SOURCES)]
PROBLEM_FIELDS = {"type", "title", "status", "detail", "errors"}
# What a refused request must never show: resource data, user data, and any session id (added per test).
LEAKS = ("Resource r", "About r", "img.example", "canvas.example.edu", "@example.edu", '"items"')


# --- the endpoints under test --------------------------------------------------------------------

USER, PROFILE, SEARCH, SESSION, CALLER = "user", "profile", "search", "session", "caller"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # `{user}` is the path's user id, `{sid}` the path's session id
    scope: str  # USER: {user} must be the caller; PROFILE/SEARCH/SESSION: their own rules; CALLER: none
    ok: int = 200
    query: tuple[tuple[str, str], ...] = ()
    body: dict[str, str] | None = None

    def __str__(self) -> str:
        query = "&".join(f"{name}={value}" for name, value in self.query)
        return f"{self.method} {self.path}" + (f"?{query}" if query else "")


ENDPOINTS = [
    Endpoint("GET", "/api/users/{user}/imports", USER),
    Endpoint("GET", "/api/resources", CALLER, query=(("onlyImported", "true"),)),
    Endpoint("GET", "/api/users/{user}/favorites", USER),
    Endpoint("POST", "/api/users/{user}/favorites", USER, ok=201, body={"resourceId": "r3"}),
    Endpoint("DELETE", "/api/users/{user}/favorites/r1", USER, ok=204),
    Endpoint("GET", "/api/users/{user}/profile", PROFILE),
    Endpoint("GET", "/api/users", SEARCH, query=(("q", "User"),)),
    Endpoint("GET", "/api/sessions/{sid}", SESSION),
    Endpoint("GET", "/api/sessions/logout", CALLER, ok=204),
    Endpoint("POST", "/api/sessions/logout", CALLER, ok=204),
]
FAVORITES_LIST, FAVORITES_ADD, FAVORITES_REMOVE, PROFILE_READ, USER_SEARCH, SESSION_READ, LOGOUT, LOGOUT_POST = (
    ENDPOINTS[2:]
)


def endpoints(*scopes: str) -> Any:
    return pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.scope in scopes], ids=str)


ALL_SCOPES = (USER, PROFILE, SEARCH, SESSION, CALLER)


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
async def world(pool: asyncpg.Pool) -> dict[str, str]:
    """u1 (the caller, a teacher) and u2 in acct-1, x1 in acct-2; r1..r3; both u1 and u2 favorite
    r1 and r2; each imported one resource. Returns session ids: own (u1), other (u2), expired (u1's,
    past its expiry) and unknown (never issued)."""
    ids = {"own": await login(pool, "u1"), "other": await login(pool, "u2"), "expired": await login(pool, "u1")}
    await pool.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 minute' WHERE id_hash = $1",
        hash_session_id(ids["expired"]),
    )
    ids["unknown"] = secrets.token_urlsafe(32)
    await add_user(pool, "x1", account_id="acct-2")
    for rid in ("r1", "r2", "r3"):
        await add_resource(pool, rid)
    for uid in ("u1", "u2"):
        await add_favorite(pool, uid, "r1", at(1))
        await add_favorite(pool, uid, "r2", at(2))
    await add_import(pool, "u1", "r1", "c1", at(3))
    await add_import(pool, "u2", "r2", "c2", at(4))
    return ids


def own_origin(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


async def send(
    client: TestClient,
    method: str,
    path: str,
    sources: dict[str, Any] | None = None,
    *,
    query: tuple[tuple[str, str], ...] = (),
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """A request carrying the session ids in `sources` (keys from SOURCES; `state` may be a tuple of
    values, sent in that order)."""
    headers, params = dict(headers or {}), list(query)
    for source, value in (sources or {}).items():
        if source == "cookie":
            headers["Cookie"] = f"session={value}"
        elif source == "header":
            headers["X-Session-ID"] = value
        elif source == "session-id":
            params.append(("session-id", value))
        elif source == "state":
            params += [("state", v) for v in ((value,) if isinstance(value, str) else value)]
        elif source == "body":
            body = {**(body or {}), "sessionId": value}
        else:
            raise AssertionError(f"unknown source {source}")
    return await client.request(method, path, params=params, json=body, headers=headers)


async def call(
    client: TestClient,
    endpoint: Endpoint,
    sources: dict[str, Any] | None = None,
    *,
    user: str = "u1",
    sid: str = "no-such-session",
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    path = endpoint.path.format(user=user, sid=sid)
    return await send(client, endpoint.method, path, sources, query=endpoint.query, body=endpoint.body, headers=headers)


async def assert_problem(response: aiohttp.ClientResponse, status: int, *secret_values: str) -> dict[str, Any]:
    """A problem+json of that status that shows nothing it should not."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/problem+json"
    problem = json.loads(text)
    assert problem["status"] == status
    assert set(problem) <= PROBLEM_FIELDS
    for leak in (*LEAKS, *secret_values):
        assert leak not in text
    return problem


async def snapshot(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Everything a refused request must leave alone: the favorites and the live sessions."""
    favorites = await pool.fetch("SELECT user_id, resource_id, created_at FROM favorites ORDER BY 1, 2")
    sessions = await pool.fetch("SELECT id_hash, user_id, expires_at FROM sessions WHERE expires_at > now() ORDER BY 1")
    return [tuple(r) for r in favorites], [tuple(r) for r in sessions]


async def favorites_of(pool: asyncpg.Pool, user_id: str) -> list[str]:
    return [
        r["resource_id"]
        for r in await pool.fetch("SELECT resource_id FROM favorites WHERE user_id = $1 ORDER BY resource_id", user_id)
    ]


async def is_live(client: TestClient, session_id: str) -> bool:
    response = await client.get(f"/api/sessions/{session_id}", headers={"X-Session-ID": session_id})
    return response.status == 200


# --- 1. the authorization matrix -----------------------------------------------------------------


@endpoints(USER, PROFILE, SESSION, CALLER)
async def test_the_owner_is_served(client, pool, world, endpoint):
    """The positive control for the matrix below: the same requests, with the caller's own session."""
    response = await call(client, endpoint, {"header": world["own"]}, sid=world["own"])
    assert response.status == endpoint.ok, await response.text()


@endpoints(*ALL_SCOPES)
@pytest.mark.parametrize("presented", [None, "unknown", "expired"])
async def test_missing_unknown_or_expired_session_is_401(client, pool, world, endpoint, presented):
    before = await snapshot(pool)
    sources = {"header": world[presented]} if presented else {}
    # The path's session id is a real, live one: a path is never a credential.
    response = await call(client, endpoint, sources, sid=world["own"])
    await assert_problem(response, 401, *world.values())
    assert await snapshot(pool) == before


async def test_a_route_needs_a_session_unless_marked_public(settings, pool):
    async def unmarked(request: web.Request) -> web.Response:
        return web.json_response({"served": True})

    @public
    async def marked(request: web.Request) -> web.Response:
        return web.json_response({"served": True})

    app = create_app(settings)
    app.router.add_get("/api/unmarked", unmarked)
    app.router.add_get("/api/marked", marked)
    async with TestClient(TestServer(app)) as client:
        await assert_problem(await client.get("/api/unmarked"), 401)
        assert (await client.get("/api/marked")).status == 200
        for path in ("/api/openapi.json", "/healthz", "/readyz", "/metrics"):  # the public routes
            assert (await client.get(path)).status == 200, path
        # A request that matches no route learns so without a session.
        await assert_problem(await client.get("/api/no-such-route"), 404)
        await assert_problem(await client.put("/api/unmarked"), 405)


@endpoints(USER)
async def test_another_users_id_in_the_path_is_403(client, pool, world, endpoint):
    before = await snapshot(pool)
    response = await call(client, endpoint, {"header": world["own"]}, user="u2")
    await assert_problem(response, 403, *world.values())
    assert await snapshot(pool) == before


async def test_another_sessions_id_in_the_path_is_403(client, pool, world):
    response = await call(client, SESSION_READ, {"header": world["own"]}, sid=world["other"])
    await assert_problem(response, 403, *world.values(), "User u2", hash_session_id(world["other"]).hex())


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("u1", 200),  # oneself
        ("u2", 200),  # a colleague of the same account
        ("x1", 404),  # another account's user
        ("ghost", 404),  # nobody
    ],
)
async def test_profile_takes_any_user_of_the_callers_account(client, pool, world, target, status):
    response = await call(client, PROFILE_READ, {"header": world["own"]}, user=target)
    if status == 200:
        assert response.status == 200
        assert await response.json() == {"url": f"https://canvas.example.edu/about/c{target}"}
    else:
        await assert_problem(response, 404, *world.values(), "cx1")


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({}, 403),  # a teacher
        ({"roles": ["student", "teacher"]}, 403),
        ({"isAdmin": True}, 200),
        ({"roles": ["group_manager"]}, 200),
        ({"roles": ["teacher", "group_manager"]}, 200),
    ],
)
async def test_only_admins_and_group_managers_search(client, pool, world, claims, status):
    session_id = await login(pool, "searcher", **claims)
    response = await call(client, USER_SEARCH, {"header": session_id})
    if status == 200:
        assert response.status == 200
        ids = [user["id"] for user in (await response.json())["items"]]
        assert {"u1", "u2"} <= set(ids) and "x1" not in ids
    else:
        await assert_problem(response, 403, *world.values(), session_id, "User u2")


# --- 2. every session source works on its own ----------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
async def test_each_source_alone_marks_a_favorite(client, pool, world, source):
    headers = {"Origin": own_origin(client)} if source == "cookie" else {}
    refused = await call(client, FAVORITES_ADD, {source: world["unknown"]}, headers=headers)
    await assert_problem(refused, 401, *world.values())
    assert await favorites_of(pool, "u1") == ["r1", "r2"]

    served = await call(client, FAVORITES_ADD, {source: world["own"]}, headers=headers)
    assert served.status == 201, await served.text()
    assert await favorites_of(pool, "u1") == ["r1", "r2", "r3"]


@pytest.mark.parametrize("source", SOURCES[:4])
async def test_each_source_alone_reads(client, pool, world, source):
    served = await call(client, FAVORITES_LIST, {source: world["own"]})
    assert served.status == 200
    assert [item["id"] for item in (await served.json())["items"]] == ["r2", "r1"]
    await assert_problem(await call(client, FAVORITES_LIST, {source: world["unknown"]}), 401, *world.values())


@pytest.mark.parametrize(
    ("first", "second", "status"), [("own", "unknown", 200), ("unknown", "own", 401), ("expired", "own", 401)]
)
async def test_only_the_first_state_value_counts(client, pool, world, first, second, status):
    response = await call(client, FAVORITES_LIST, {"state": (world[first], world[second])})
    assert response.status == status


# --- 3. precedence: the first source present wins, valid or not ---------------------------------


@pytest.mark.parametrize(("first", "second"), ADJACENT)
@pytest.mark.parametrize(
    ("first_id", "second_id", "status"),
    [
        ("own", "unknown", 201),
        ("unknown", "own", 401),
        ("expired", "own", 401),
        ("other", "own", 403),  # u2's valid session is the one used, and it may not act for u1
    ],
)
async def test_first_present_source_wins(client, pool, world, first, second, first_id, second_id, status):
    before = await snapshot(pool)
    response = await call(
        client,
        FAVORITES_ADD,
        {first: world[first_id], second: world[second_id]},
        headers={"Origin": own_origin(client)},
    )
    if status == 201:
        assert response.status == 201, await response.text()
        assert await favorites_of(pool, "u1") == ["r1", "r2", "r3"]
    else:
        await assert_problem(response, status, *world.values())
        assert await snapshot(pool) == before


@pytest.mark.parametrize(
    ("logout", "first", "second"),
    [
        *(pytest.param(LOGOUT, *pair.values, id=f"GET, {pair.id}") for pair in ADJACENT[:3]),  # a GET has no body
        *(pytest.param(LOGOUT_POST, *pair.values, id=f"POST, {pair.id}") for pair in ADJACENT),
    ],
)
async def test_logout_destroys_only_the_winning_session(client, pool, world, logout, first, second):
    headers = {"Origin": own_origin(client)}  # as a browser sends it, for the cookie
    refused = await call(client, logout, {first: world["unknown"], second: world["own"]}, headers=headers)
    await assert_problem(refused, 401, *world.values())
    assert await is_live(client, world["own"])

    done = await call(client, logout, {first: world["own"], second: world["other"]}, headers=headers)
    assert done.status == 204
    assert not await is_live(client, world["own"])
    assert await is_live(client, world["other"])


# --- 4. CSRF: a cookie session changes data only from an allowed origin ---------------------------


def origin_headers(client: TestClient, case: str) -> dict[str, str]:
    own = client.make_url("")
    assert own.port is not None
    origin = own_origin(client)
    return {
        "none": {},
        "own origin": {"Origin": origin},
        "own referer": {"Referer": f"{origin}/app/page?x=1"},
        "foreign origin": {"Origin": "https://evil.example"},
        "foreign referer": {"Referer": "https://evil.example/page"},
        "relative referer": {"Referer": "/app/page"},  # not an origin: refused, never a server error
        "null origin": {"Origin": "null"},
        "other port": {"Origin": f"{own.scheme}://{own.host}:{own.port + 1}"},
        "other scheme": {"Origin": f"https://{own.host}:{own.port}"},
        "foreign origin, own referer": {"Origin": "https://evil.example", "Referer": f"{origin}/"},
        "lms origin": {"Origin": "https://lms.example"},
        "lms referer": {"Referer": "https://lms.example/courses/1"},
        "lms lookalike": {"Origin": "https://lms.example.evil"},
        "lms over http": {"Origin": "http://lms.example"},
    }[case]


async def assert_csrf(client, pool, world, endpoint, case, allowed):
    before = await snapshot(pool)
    response = await call(client, endpoint, {"cookie": world["own"]}, headers=origin_headers(client, case))
    if allowed:
        assert response.status == endpoint.ok, await response.text()
        assert await snapshot(pool) != before
    else:
        await assert_problem(response, 403, *world.values())
        assert await snapshot(pool) == before


@pytest.mark.parametrize("endpoint", [FAVORITES_ADD, FAVORITES_REMOVE], ids=str)
@pytest.mark.parametrize(
    ("case", "allowed"),
    [
        ("none", False),
        ("own origin", True),
        ("own referer", True),
        ("foreign origin", False),
        ("foreign referer", False),
        ("relative referer", False),
        ("null origin", False),
        ("other port", False),
        ("other scheme", False),
        ("foreign origin, own referer", False),
        ("lms origin", False),  # configured elsewhere only
    ],
)
async def test_cookie_session_needs_an_allowed_origin(client, pool, world, endpoint, case, allowed):
    await assert_csrf(client, pool, world, endpoint, case, allowed)


@pytest.fixture
async def lms_client(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(database_url, allowed_origins="https://lms.example"))
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


@pytest.mark.parametrize("endpoint", [FAVORITES_ADD, FAVORITES_REMOVE], ids=str)
@pytest.mark.parametrize(
    ("case", "allowed"),
    [
        ("lms origin", True),
        ("lms referer", True),
        ("own origin", True),
        ("lms lookalike", False),
        ("lms over http", False),
        ("none", False),
        ("foreign origin", False),
    ],
)
async def test_configured_origins_are_allowed(lms_client, pool, world, endpoint, case, allowed):
    await assert_csrf(lms_client, pool, world, endpoint, case, allowed)


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.method == "GET" and e.scope != SEARCH], ids=str)
async def test_cookie_reads_need_no_origin(client, pool, world, endpoint):
    response = await call(client, endpoint, {"cookie": world["own"]}, sid=world["own"])
    assert response.status == endpoint.ok, await response.text()


@pytest.mark.parametrize(
    ("endpoint", "source"),
    [
        *((FAVORITES_ADD, source) for source in SOURCES[1:]),
        *((FAVORITES_REMOVE, source) for source in SOURCES[1:4]),  # a DELETE has no body to carry it
    ],
    ids=str,
)
async def test_non_cookie_sessions_change_data_without_origin(client, pool, world, endpoint, source):
    before = await snapshot(pool)
    response = await call(client, endpoint, {source: world["own"]})
    assert response.status == endpoint.ok, await response.text()
    assert await snapshot(pool) != before


# --- 5. session ids never reach the access log ---------------------------------------------------


@pytest.fixture
async def logged_client(settings, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    # aiohttp 3.14's TestServer drops constructor kwargs: runner options go to start_server, and
    # the client's own start_server call is then a no-op.
    server = TestServer(create_app(settings))
    await server.start_server(access_log_class=AccessLogger)
    async with TestClient(server, cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


async def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The access log lines, once `count` of them are written (aiohttp logs after it answers)."""
    for _ in range(200):
        lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} access log lines, got {lines}")


def fill(value: str | tuple[str, ...], **ids: str) -> str | tuple[str, ...]:
    return value.format(**ids) if isinstance(value, str) else tuple(v.format(**ids) for v in value)


FAVORITES = "/api/users/u1/favorites"


@pytest.mark.parametrize("sid_name", ["own", "unknown"])
@pytest.mark.parametrize(
    ("method", "path", "sources", "logged", "status"),
    [
        pytest.param("GET", FAVORITES, {"session-id": "{sid}"}, FAVORITES, 200, id="session-id query"),
        pytest.param("GET", FAVORITES, {"state": "{sid}"}, FAVORITES, 200, id="state query"),
        pytest.param("GET", FAVORITES, {"state": ("{sid}", "{other}")}, FAVORITES, 200, id="state query twice"),
        pytest.param("GET", FAVORITES, {"header": "{sid}"}, FAVORITES, 200, id="header"),
        pytest.param("GET", FAVORITES, {"cookie": "{sid}"}, FAVORITES, 200, id="cookie"),
        pytest.param("POST", FAVORITES, {"body": "{sid}"}, FAVORITES, 201, id="body"),
        pytest.param("GET", "/api/sessions/{sid}", {"header": "{sid}"}, "/api/sessions/", 200, id="path"),
        pytest.param("GET", "/api/sessions/{sid}", {"session-id": "{sid}"}, "/api/sessions/", 200, id="path and query"),
        pytest.param(
            "GET", "/api/sessions/{sid}/", {"header": "{sid}"}, "/api/sessions/", 404, id="path with a stray slash"
        ),
        pytest.param(
            "GET", "/api/sessions/logout", {"session-id": "{sid}"}, "/api/sessions/logout", 204, id="logout by query"
        ),
    ],
)
async def test_session_ids_never_reach_the_access_log(
    logged_client, pool, world, caplog, sid_name, method, path, sources, logged, status
):
    caplog.set_level(logging.DEBUG)
    ids = {"sid": world[sid_name], "other": world["other"]}
    sources = {name: fill(value, **ids) for name, value in sources.items()}
    body = {"resourceId": "r3"} if method == "POST" else None
    response = await send(logged_client, method, path.format(**ids), sources, body=body)
    if sid_name == "unknown" and status != 404:
        status = 401
    assert response.status == status

    [line] = await access_lines(caplog, 1)
    assert f'"{method} {logged}' in line  # still says what was asked
    assert f" {status} " in line  # and how it went
    for record in caplog.records:  # and no log line at all, from any logger, holds a session id
        for session_id in world.values():
            assert session_id not in record.getMessage()


async def test_a_lone_surrogate_in_the_body_session_is_an_unknown_session(client, pool):
    response = await client.post(
        "/api/users/u1/favorites",
        data='{"sessionId": "\\ud800", "resourceId": "r1"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 401
