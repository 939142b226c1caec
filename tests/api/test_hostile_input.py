"""Input that once made the API answer 500 or grant a right, and a property over every header a
client controls: whatever arrives, the answer is a 4xx or a success, never a 5xx."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
import pytest

from tests.factories import add_resource, login, token

FAVORITES = "/api/users/u1/favorites"


async def create_session(client: Any, jwt_token: str) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/sessions", json={"jwt_token": jwt_token})
    return response.status, await response.json()


def fields(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors", [])}


@pytest.mark.parametrize("iat", [-(10**12), 10**12, -(2**63)])
async def test_a_token_with_an_absurd_iat_is_401_naming_it(client, pool, iat):
    status, problem = await create_session(client, token("u1", iat=iat))
    assert status == 401 and fields(problem) == {"iat"}
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize(
    ("claim", "value"),
    [("isAdmin", "true"), ("isAdmin", 1), ("roles", "group_manager"), ("exp", "9999999999"), ("iat", 1.5)],
)
async def test_token_claims_of_the_wrong_type_are_refused_not_converted(client, pool, claim, value):
    status, problem = await create_session(client, token("u1", **{claim: value}))
    assert status == 401, problem
    assert claim in fields(problem) or claim in problem["detail"]
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("key", ["a\\u0000b", "a\\ud800b", "\\udfff"])
async def test_a_body_property_name_that_cannot_be_stored_is_400(client, pool, key):
    headers = {"X-Session-ID": await login(pool, "u1"), "Content-Type": "application/json"}
    await add_resource(pool, "r1")
    response = await client.post(FAVORITES, data=f'{{"resourceId": "r1", "{key}": 1}}', headers=headers)
    assert response.status == 400 and response.content_type == "application/problem+json"
    assert await pool.fetchval("SELECT count(*) FROM favorites") == 0


# What a client may put in a header value: latin-1 text without line breaks.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
HEADERS = st.dictionaries(
    st.sampled_from(
        ["Cookie", "X-Session-ID", "Origin", "Referer", "X-Request-ID", "Content-Type", "Accept", "Sec-Fetch-Site"]
    ),
    HEADER_TEXT,
)
REQUESTS = st.sampled_from(
    [
        ("GET", FAVORITES),
        ("POST", FAVORITES),
        ("DELETE", f"{FAVORITES}/r1"),
        ("POST", "/api/users/u1/updates/r1/ignore"),
        ("GET", "/api/users?q=abc"),
        ("POST", "/api/sessions"),
        ("GET", "/api/sessions/logout"),
        ("GET", "/healthz"),
        ("GET", "/api/no-such-route"),
    ]
)


@hypothesis_settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=REQUESTS, headers=HEADERS, with_cookie=st.booleans())
async def test_no_header_value_makes_a_5xx(client, pool, request, headers, with_cookie):
    method, path = request
    if with_cookie:  # a real cookie session, so that the Origin check and the handlers run
        session_id = await login(pool, "u1")
        headers = {**headers, "Cookie": f"session={session_id}; {headers.get('Cookie', '')}"}
    response = await client.request(method, path, headers=headers, data=b'{"resourceId": "r1"}')
    assert response.status < 500, await response.text()
