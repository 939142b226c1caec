"""The client behind trusted proxies (README: "Behind a proxy"): whom a request is from, and which
origin it was sent to, as the origin check, the rate limit and the access log see it. The test
client connects from 127.0.0.1, the proxy when that address is trusted."""

from __future__ import annotations

from collections.abc import AsyncIterator
import contextlib
import logging
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
import pytest

from core.settings import Settings
from service.access_log import AccessLogger
from service.app import create_app
from service.auth import public
from service.proxies import client as client_of
from tests.factories import add_resource, login, make_settings, token


@public
async def who(request: web.Request) -> web.Response:
    found = client_of(request)
    return web.json_response({"address": found.address, "scheme": found.scheme, "host": found.host})


@contextlib.asynccontextmanager
async def serve(settings: Settings, **server: Any) -> AsyncIterator[TestClient]:
    app = create_app(settings)
    app.router.add_get("/who", who)
    test_server = TestServer(app)
    await test_server.start_server(**server)  # its runner's options, such as the access logger
    async with TestClient(test_server, cookie_jar=aiohttp.DummyCookieJar()) as client:
        yield client


async def seen(client: TestClient, headers: dict[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    async with client.get("/who", headers=headers) as response:
        assert response.status == 200
        found: dict[str, str] = await response.json()
        return found


FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "commons.example"}


async def test_nobody_is_trusted_by_default(database_url, pool):
    async with serve(make_settings(database_url)) as client:
        found = await seen(client, {**FORWARDED, "Forwarded": "for=198.51.100.1;proto=https;host=evil.example"})
        assert found == {"address": "127.0.0.1", "scheme": "http", "host": f"127.0.0.1:{client.port}"}


@pytest.mark.parametrize(
    ("trusted", "headers", "expected"),
    [
        # One proxy: what it says.
        ("127.0.0.1", FORWARDED, ("203.0.113.9", "https", "commons.example")),
        # The rightmost address that is not a trusted proxy; what the client wrote left of it is its own claim.
        (
            "127.0.0.1, 10.0.0.0/8",
            {"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.1.2.3", "X-Forwarded-Proto": "https"},
            ("203.0.113.9", "https", None),
        ),
        # Proxies that append to -Proto: the value written beside the client's address.
        (
            "127.0.0.1, 10.0.0.0/8",
            {"X-Forwarded-For": "203.0.113.9, 10.1.2.3", "X-Forwarded-Proto": "https, http"},
            ("203.0.113.9", "https", None),
        ),
        # Every hop a trusted proxy: the first one.
        ("127.0.0.0/8, 10.0.0.0/8", {"X-Forwarded-For": "10.0.0.5, 10.0.0.6"}, ("10.0.0.5", "http", None)),
        # A port, brackets, an address mapped into IPv6: the plain address.
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9:51234"}, ("203.0.113.9", "http", None)),
        ("127.0.0.1", {"X-Forwarded-For": "[2001:db8::1]:443"}, ("2001:db8::1", "http", None)),
        ("127.0.0.1", {"X-Forwarded-For": "::ffff:203.0.113.9"}, ("203.0.113.9", "http", None)),
        # A scheme that is neither http nor https is not taken.
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "gopher"}, ("203.0.113.9", "http", None)),
        # A trusted proxy that says nothing: itself.
        ("127.0.0.1", {}, ("127.0.0.1", "http", None)),
    ],
)
async def test_x_forwarded_headers_from_a_trusted_proxy(database_url, pool, trusted, headers, expected):
    async with serve(make_settings(database_url, trusted_proxies=trusted)) as client:
        found = await seen(client, headers)
        address, scheme, host = expected
        assert found == {"address": address, "scheme": scheme, "host": host or f"127.0.0.1:{client.port}"}


async def test_several_header_lines_are_one_list(database_url, pool):
    async with serve(make_settings(database_url, trusted_proxies="127.0.0.1,10.0.0.0/8")) as client:
        found = await seen(client, [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "10.1.2.3")])
        assert found["address"] == "203.0.113.9"


async def test_forwarded_from_a_trusted_proxy_that_writes_it(database_url, pool):
    settings = make_settings(database_url, trusted_proxies="127.0.0.1,10.0.0.0/8", proxy_headers="forwarded")
    async with serve(settings) as client:
        headers = {
            "Forwarded": 'for=198.51.100.7, for="[2001:db8::7]:4711";proto=https;host=commons.example, for=10.1.2.3',
            **FORWARDED,  # the kind it does not write: passed on from the client, ignored
        }
        assert await seen(client, headers) == {"address": "2001:db8::7", "scheme": "https", "host": "commons.example"}
        assert (await seen(client, {"Forwarded": "for=unknown"}))["address"] == "unknown"
        assert (await seen(client, FORWARDED))["address"] == "127.0.0.1"


@pytest.mark.parametrize("value", ["not-an-address", "10.0.0.0/33", "10.0.0.1,,x"])
def test_a_bad_trusted_proxy_is_a_configuration_error(database_url, value):
    with pytest.raises(ValidationError, match="trusted_proxies"):
        make_settings(database_url, trusted_proxies=value)


async def favorite(client: TestClient, session_id: str, origin: str) -> int:
    headers = {**FORWARDED, "Cookie": f"session={session_id}", "Origin": origin, "Content-Type": "application/json"}
    async with client.post("/api/users/u1/favorites", headers=headers, data='{"resourceId": "r1"}') as response:
        return response.status


async def test_a_cookie_post_from_the_origin_the_proxy_names_is_accepted(database_url, pool):
    await add_resource(pool, "r1")
    session_id = await login(pool, "u1")
    async with serve(make_settings(database_url, trusted_proxies="127.0.0.1")) as client:
        assert await favorite(client, session_id, "https://commons.example") == 201
        assert await favorite(client, session_id, "https://commons.example.evil") == 403
        assert await favorite(client, session_id, "http://commons.example") == 403
    async with serve(make_settings(database_url)) as client:  # not behind a trusted proxy
        assert await favorite(client, session_id, "https://commons.example") == 403


async def log_in(client: TestClient, address: str) -> int:
    body = {"jwt_token": token("u1", key="not-the-key-" + "x" * 32)}
    async with client.post("/api/sessions", json=body, headers={"X-Forwarded-For": address}) as response:
        return response.status


async def test_the_login_limit_counts_each_client_behind_the_proxy(database_url, pool):
    async with serve(make_settings(database_url, trusted_proxies="127.0.0.1", rate_limit_per_hour=3)) as client:
        assert [await log_in(client, "203.0.113.1") for _ in range(4)] == [401, 401, 401, 429]
        assert await log_in(client, "203.0.113.2") == 401  # another client is not limited
    async with serve(make_settings(database_url, rate_limit_per_hour=3)) as client:
        # Not trusted: a header that changes with every request does not escape the count.
        assert [await log_in(client, f"203.0.113.{n}") for n in range(4)] == [401, 401, 401, 429]


async def test_the_access_log_names_the_client(database_url, pool, caplog):
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    settings = make_settings(database_url, trusted_proxies="127.0.0.1")
    async with serve(settings, access_log_class=AccessLogger) as client:
        await seen(client, {"X-Forwarded-For": "203.0.113.9"})
    [line] = [record.getMessage() for record in caplog.records if record.name == "aiohttp.access"]
    assert line.startswith('203.0.113.9 "GET /who"')
