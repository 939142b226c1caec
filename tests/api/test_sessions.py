"""Sessions: created from a signed identity token, read back, destroyed."""

from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.sessions import hash_session_id
from service.app import create_app
from tests.factories import make_settings, token

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
