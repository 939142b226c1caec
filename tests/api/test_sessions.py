"""Sessions: created from a signed identity token, read back, destroyed."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
import pytest

from core.sessions import hash_session_id
from service.app import create_app
from tests.factories import login, make_settings, token

SESSION_FIELDS = {
    "sid",
    "expires",
    "userId",
    "userFullName",
    "accountId",
    "accountName",
    "canvasUserId",
    "canvasApiDomain",
    "roles",
    "isAdmin",
}


async def create(client, jwt_token):
    return await client.post("/api/sessions", json={"jwt_token": jwt_token})


async def test_create_read_and_logout(client, pool):
    response = await create(client, token("u1", name="Ada Lovelace", isAdmin=True, roles=["group_manager"]))
    assert response.status == 201
    body = await response.json()
    assert set(body) == SESSION_FIELDS | {"sessionId"}
    session_id = body["sessionId"]
    assert len(session_id) >= 43  # 256 random bits, URL-safe base64
    assert body["userId"] == "u1" and body["userFullName"] == "Ada Lovelace"
    assert body["accountId"] == "acct-1" and body["accountName"] == "Academy One"
    assert body["canvasUserId"] == "cu1" and body["canvasApiDomain"] == "canvas.example.edu"
    assert body["roles"] == ["group_manager"] and body["isAdmin"] is True
    expires = datetime.fromisoformat(body["expires"])
    assert timedelta(hours=7) < expires - datetime.now(UTC) <= timedelta(hours=8)

    cookie = response.cookies["session"]
    assert cookie.value == session_id
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"

    # Only the hash is stored.
    stored = await pool.fetchval("SELECT id_hash FROM sessions")
    assert stored == hash_session_id(session_id)
    assert session_id.encode() not in stored

    headers = {"X-Session-ID": session_id}
    read = await client.get(f"/api/sessions/{session_id}", headers=headers)
    assert read.status == 200
    info = await read.json()
    assert info == {key: value for key, value in body.items() if key != "sessionId"}
    assert info["sid"] == stored.hex()

    out = await client.get("/api/sessions/logout", headers=headers)
    assert out.status == 204
    assert out.cookies["session"].value == ""
    assert (await client.get(f"/api/sessions/{session_id}", headers=headers)).status == 401


async def test_another_session_cannot_be_read(client):
    mine = (await (await create(client, token("u1"))).json())["sessionId"]
    theirs = (await (await create(client, token("u2"))).json())["sessionId"]
    response = await client.get(f"/api/sessions/{theirs}", headers={"X-Session-ID": mine})
    assert response.status == 403
    assert theirs not in await response.text()


async def test_creating_a_session_upserts_the_user(client, pool):
    now = int(datetime.now(UTC).timestamp())
    await create(client, token("u1", name="Old Name", iat=now - 60))
    await create(client, token("u1", name="New Name", email="new@example.edu", iat=now))
    await create(client, token("u1", name="Stale Name", iat=now - 30))  # an older token changes nothing
    row = await pool.fetchrow("SELECT name, email FROM users WHERE id = 'u1'")
    assert dict(row) == {"name": "New Name", "email": "new@example.edu"}
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 3


async def test_ttl_comes_from_the_settings(database_url, pool):
    app = create_app(make_settings(database_url, session_ttl_seconds=120))
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        body = await (await create(client, token("u1"))).json()
    left = datetime.fromisoformat(body["expires"]) - datetime.now(UTC)
    assert timedelta(seconds=100) < left <= timedelta(seconds=120)


async def test_rs256_tokens_when_a_public_key_is_configured(database_url, pool):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    app = create_app(make_settings(database_url, jwt_public_key=pem))
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        assert (await create(client, token("u1", key=private, algorithm="RS256"))).status == 201
        assert (await create(client, token("u2"))).status == 401  # HS256 is refused then
    assert await pool.fetchval("SELECT array_agg(id) FROM users") == ["u1"]


async def test_issuer_and_audience_when_configured(database_url, pool):
    app = create_app(make_settings(database_url, jwt_issuer="https://lms.example", jwt_audience="commons"))
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        good = token("u1", iss="https://lms.example", aud="commons")
        assert (await create(client, good)).status == 201
        for bad in (
            token("u2"),
            token("u3", iss="https://evil.example", aud="commons"),
            token("u4", iss="https://lms.example", aud="other"),
        ):
            assert (await create(client, bad)).status == 401


# --- logout from another site ----------------------------------------------------------------------
# Browsers send the SameSite=Lax cookie on a top-level GET navigation from any site, and mark where a
# request comes from with Sec-Fetch-Site (and, on a POST or a CORS request, Origin).

LMS = "https://lms.example"


@pytest.fixture
async def lms_client(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    app = create_app(make_settings(database_url, allowed_origins=LMS))
    async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


def browser_headers(client: TestClient, case: str) -> dict[str, str]:
    own = str(client.make_url("")).rstrip("/")
    return {
        "nothing said": {},  # a typed URL in an older browser, or a client that is no browser
        "same-origin navigation": {"Sec-Fetch-Site": "same-origin", "Referer": f"{own}/app"},
        "typed or bookmarked": {"Sec-Fetch-Site": "none"},
        "same-site navigation": {"Sec-Fetch-Site": "same-site"},
        "own origin": {"Sec-Fetch-Site": "same-origin", "Origin": own},
        "cross-site link": {"Sec-Fetch-Site": "cross-site", "Referer": "https://evil.example/page"},
        "cross-site link, no referrer": {"Sec-Fetch-Site": "cross-site"},
        "cross-site link from the lms": {"Sec-Fetch-Site": "cross-site", "Referer": f"{LMS}/courses/1"},
        "cross-site form": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        "lms fetch": {"Sec-Fetch-Site": "cross-site", "Origin": LMS},
        "foreign referer": {"Referer": "https://evil.example/page"},  # an older browser's cross-site link
        "foreign origin": {"Origin": "https://evil.example"},
    }[case]


async def cookie_logout(client: TestClient, method: str, session_id: str, case: str) -> aiohttp.ClientResponse:
    headers = {"Cookie": f"session={session_id}", **browser_headers(client, case)}
    return await client.request(method, "/api/sessions/logout", headers=headers)


async def is_live(client: TestClient, session_id: str) -> bool:
    return (await client.get(f"/api/sessions/{session_id}", headers={"X-Session-ID": session_id})).status == 200


async def assert_logout(client: TestClient, response: aiohttp.ClientResponse, session_id: str, allowed: bool) -> None:
    if allowed:
        assert response.status == 204, await response.text()
        assert response.cookies["session"].value == ""
        assert not await is_live(client, session_id)
    else:
        assert response.status == 403, await response.text()
        assert response.content_type == "application/problem+json"
        assert (await response.json())["type"] == "urn:commons-users:problem:forbidden"
        assert "Set-Cookie" not in response.headers
        assert await is_live(client, session_id)


LOGOUT_CASES = [
    # (method, case, allowed without and with the LMS among ALLOWED_ORIGINS)
    ("GET", "nothing said", True, True),
    ("GET", "same-origin navigation", True, True),
    ("GET", "typed or bookmarked", True, True),
    ("GET", "same-site navigation", True, True),
    ("GET", "own origin", True, True),
    ("GET", "cross-site link", False, False),
    ("GET", "cross-site link, no referrer", False, False),
    ("GET", "cross-site link from the lms", False, False),  # only a request the LMS sends with its Origin
    ("GET", "cross-site form", False, False),
    ("GET", "lms fetch", False, True),
    ("GET", "foreign referer", False, False),
    ("GET", "foreign origin", False, False),
    ("POST", "nothing said", False, False),  # a cookie POST needs an allowed origin (README)
    ("POST", "own origin", True, True),
    ("POST", "same-origin navigation", True, True),  # its Referer is the own origin
    ("POST", "cross-site form", False, False),
    ("POST", "cross-site link", False, False),
    ("POST", "lms fetch", False, True),
    ("POST", "foreign origin", False, False),
]


@pytest.mark.parametrize(
    ("method", "case", "allowed", "allowed_with_lms"), LOGOUT_CASES, ids=[f"{m} {c}" for m, c, _, _ in LOGOUT_CASES]
)
async def test_cookie_logout_only_from_an_allowed_site(
    client, lms_client, pool, method, case, allowed, allowed_with_lms
):
    for served_by, expected in ((client, allowed), (lms_client, allowed_with_lms)):
        session_id = await login(pool, "u1")
        response = await cookie_logout(served_by, method, session_id, case)
        await assert_logout(served_by, response, session_id, expected)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case", ["cross-site link", "cross-site form"])
async def test_other_sources_log_out_from_anywhere(client, pool, method, case):
    """A browser does not send them on its own: whoever sends one holds the session id."""
    session_id = await login(pool, "u1")
    headers = {"X-Session-ID": session_id, **browser_headers(client, case)}
    response = await client.request(method, "/api/sessions/logout", headers=headers)
    await assert_logout(client, response, session_id, allowed=True)


async def test_the_cookie_decides_even_beside_another_source(client, pool):
    """The cookie is the first source: a cross-site link with a header session is still refused."""
    session_id = await login(pool, "u1")
    headers = {
        "Cookie": f"session={session_id}",
        "X-Session-ID": session_id,
        **browser_headers(client, "cross-site link"),
    }
    response = await client.get("/api/sessions/logout", headers=headers)
    await assert_logout(client, response, session_id, allowed=False)
