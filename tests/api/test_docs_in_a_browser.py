"""The API in a real browser: headless Chromium from Debian's packages (`make test` installs it),
driven by Playwright, which downloads no browser of its own. The reference at /api/docs renders
every operation of /api/openapi.json from the API's own files; a page's EventSource, with the session
cookie the browser got by logging in, follows the user's updates across a restart of the API
(README: "Live updates")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib.metadata import version
import json
import os
from pathlib import Path
import sys
from typing import Any

from aiohttp.test_utils import TestClient
import asyncpg
from playwright.async_api import Browser, ConsoleMessage, Error, Page, Request, async_playwright
import pytest

from core.settings import Settings
from devtools.tansu import free_port
from tests.factories import apply, at, imported, published, token
from tests.processes import ServiceProcess, environment, listens, stop

CHROMIUM = Path("/usr/bin/chromium")
# Generous: the machine may be busy with other tests.
WAIT_MS = 60_000
STREAM = "/api/users/u1/update-stream"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        raise RuntimeError("chromium is not installed: `make test` installs Debian's chromium")
    async with async_playwright() as playwright:
        # As root, Chromium runs only without its sandbox.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page and what it asked for, said on its console, and had refused by its CSP."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", self._page_error)

    def _request(self, request: Request) -> None:
        self.requests.append(request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _page_error(self, error: Error) -> None:
        self.errors.append(str(error))

    async def violations(self) -> list[tuple[str, str]]:
        return [tuple(violation) for violation in await self.page.evaluate("window.violations")]


async def watched(browser: Browser) -> Watched:
    page = await browser.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.add_init_script(
        "window.violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.violations.push([e.violatedDirective, e.blockedURI]));"
    )
    return Watched(page)


# --- the reference ------------------------------------------------------------------------------


async def test_the_reference_renders_every_operation_from_the_apis_own_files(client: TestClient, browser):
    origin = str(client.make_url("")).rstrip("/")
    document = await (await client.get("/api/openapi.json")).json()
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert len(operations) > 10

    watch = await watched(browser)
    response = await watch.page.goto(f"{origin}/api/docs")
    assert response is not None and response.status == 200
    # A function, not an expression: Playwright would `eval` an expression in the page, which its CSP refuses.
    await watch.page.wait_for_function("n => document.querySelectorAll('.opblock').length >= n", arg=len(operations))
    rendered = await watch.page.eval_on_selector_all(
        ".opblock",
        "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').textContent,"
        " b.querySelector('.opblock-summary [data-path]').dataset.path])",
    )
    assert sorted(map(tuple, rendered)) == sorted(operations)
    assert await watch.page.title() == "Commons Users API"
    # The document's own title, as Swagger UI shows it, read from the document it fetched.
    assert document["info"]["title"] in await watch.page.inner_text(".info .title")

    fetched = [request.url for request in watch.requests]
    assert f"{origin}/api/openapi.json" in fetched
    assert f"{origin}/api/docs/swagger-ui-bundle.js" in fetched
    assert [url for url in fetched if not url.startswith((origin + "/", "data:"))] == []  # no CDN, nothing else
    assert watch.errors == []
    # The Content-Security-Policy refused nothing of the page, yet it is in force: an inline script is refused.
    assert await watch.violations() == []
    inline = "() => { document.body.append(Object.assign(document.createElement('script'), {text: 'ran = 1'})); }"
    await watch.page.evaluate(inline)
    await watch.page.wait_for_function("() => window.violations.length > 0")
    assert await watch.violations() == [("script-src-elem", "inline")]
    assert await watch.page.evaluate("() => typeof window.ran") == "undefined"
    # The Swagger UI that rendered it is the one the pinned package ships.
    swagger_ui = await watch.page.evaluate("() => window.versions.swaggerUI.version")
    assert swagger_ui == version("flask-swagger-ui")


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/api/docs", "text/html"),
        ("/api/docs/index.js", "text/javascript"),
        ("/api/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/api/docs/swagger-ui.css", "text/css"),
    ],
)
async def test_the_page_and_its_files_are_public_with_their_media_types(client, path, media_type):
    response = await client.get(path)  # no session
    assert response.status == 200
    assert response.content_type == media_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "RateLimit" not in response.headers  # not counted, as the document itself is not
    assert len(await response.read()) > 100
    if path == "/api/docs":
        assert "script-src 'self';" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("asset", ["nothing.js", "index.html", "..%2F..%2Fpyproject.toml", "%2E%2E", "LICENSE"])
async def test_nothing_else_is_served_under_the_docs(client, asset):
    response = await client.get(f"/api/docs/{asset}")
    assert response.status == 404
    assert response.content_type == "application/problem+json"


# --- the live update stream in the browser ------------------------------------------------------

# Opens the page's EventSource, and keeps every event it receives, and counts its connections opened
# and its errors (a connection lost, or one that could not be made).
OPEN_STREAM = """stream => {
  window.received = [];
  window.opened = 0;
  window.failed = 0;
  window.source = new EventSource(stream);
  source.onopen = () => { window.opened += 1; };
  source.onerror = () => { window.failed += 1; };
  for (const name of ["update", "ready", "gap", "closed"]) {
    source.addEventListener(name, e => received.push({event: name, id: e.lastEventId, data: JSON.parse(e.data)}));
  }
}"""
# A POST from the page, as its scripts send one: with the cookie, from the page's own origin.
POST = """async ([path, body]) => {
  const answer = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body});
  return answer.status;
}"""


async def received(page: Page, count: int) -> list[dict[str, Any]]:
    """The page's first `count` events, once it has them."""
    await page.wait_for_function("n => window.received.length >= n", arg=count)
    events: list[dict[str, Any]] = await page.evaluate("window.received")
    return events


def shown(event: dict[str, Any]) -> tuple[str, str | None]:
    """An event, in short: its name, and the version it shows, or the resource it removes."""
    return event["event"], event["data"].get("versionId") or event["data"].get("resourceId")


async def test_a_pages_event_source_follows_the_updates_across_a_restart(browser, pool: asyncpg.Pool, settings):
    await apply(pool, published("r1", 1, at_time=at(0)), published("r2", 1, at_time=at(0)))
    await apply(pool, *(imported("u1", rid, course, at(1)) for rid in ("r1", "r2") for course in ("c1", "c2")))
    await apply(pool, published("r1", 2, at_time=at(2)), published("r2", 2, at_time=at(2)))
    port = free_port()
    api = await asyncio.to_thread(start_api, settings, port)
    try:
        watch = await watched(browser)
        page, origin = watch.page, f"http://127.0.0.1:{port}"
        await page.goto(f"{origin}/api/docs")  # a page of the API's origin
        # The page logs in: the answer sets the session cookie (HttpOnly, Secure: Chromium keeps a
        # Secure cookie from http://127.0.0.1, a loopback origin, as a secure one).
        login = json.dumps({"jwt_token": token("u1")})
        assert await page.evaluate(POST, ["/api/sessions", login]) == 201
        [cookie] = await page.context.cookies(origin + "/api")
        assert (cookie["name"], cookie["httpOnly"], cookie["secure"]) == ("session", True, True)

        # Its EventSource names no session: the browser sends the cookie.
        await page.evaluate(OPEN_STREAM, STREAM)
        [ready] = await received(page, 1)
        assert ready["event"] == "ready"
        ignore = json.dumps({"courseIds": ["c1"]})
        assert await page.evaluate(POST, ["/api/users/u1/updates/r1/ignore", ignore]) == 204
        ignored = (await received(page, 2))[1]
        assert ignored["event"] == "update" and int(ignored["id"]) > int(ready["id"])
        assert [c["courseId"] for c in ignored["data"]["courses"]] == ["c2"]  # c1 ignored

        code, _ = await asyncio.to_thread(stop, api)
        assert code == 0
        closed = (await received(page, 3))[2]
        assert closed == {"event": "closed", "id": ignored["id"], "data": {"reason": "server shutting down"}}
        # While the API is down: r1 imported again (no update left), r2 published twice.
        await apply(pool, published("r2", 3, at_time=at(3)))
        await apply(pool, imported("u1", "r1", "c2", at(4), version=2))
        await apply(pool, published("r2", 4, at_time=at(5)))
        # The browser tried to reconnect, could not, and tries on (it has not given up: CONNECTING).
        await page.wait_for_function("() => window.failed >= 2")
        assert await page.evaluate("window.source.readyState") == 0

        api = await asyncio.to_thread(start_api, settings, port)
        # The same EventSource reconnects by itself, with the id of the last event it received, and
        # gets what it missed, once for each resource as it stands now, then `ready`.
        after = (await received(page, 6))[3:]
        assert [shown(event) for event in after] == [("update", "r1"), ("update", "r2-v4"), ("ready", None)]
        assert after[0]["data"] == {"resourceId": "r1", "removed": True}
        assert int(ignored["id"]) < int(after[0]["id"]) < int(after[1]["id"]) <= int(after[2]["id"])
        assert await page.evaluate("[window.opened, window.source.readyState]") == [2, 1]  # one source, open
        # The first request and the one that reconnected (those between found nobody listening).
        first, *_, last = [r for r in watch.requests if r.url == origin + STREAM]
        first_headers, last_headers = await first.all_headers(), await last.all_headers()
        assert "last-event-id" not in first_headers
        assert last_headers["last-event-id"] == ignored["id"]
        assert first_headers["cookie"] == last_headers["cookie"] == f"session={cookie['value']}"

        # Live again: the next change is the next event, with nothing sent twice before it.
        await apply(pool, published("r2", 5, at_time=at(6)))
        events = await received(page, 7)
        assert [shown(event) for event in events[6:]] == [("update", "r2-v5")]
        assert len(await page.evaluate("window.received")) == 7
    finally:
        await asyncio.to_thread(stop, api)


def start_api(settings: Settings, port: int) -> ServiceProcess:
    """`commons-users api` with these settings, once it listens on `port` (given time: the machine
    may be busy)."""
    command = [sys.executable, "-m", "service", "api", "--host", "127.0.0.1", "--port", str(port)]
    process = ServiceProcess(command, env=environment(settings))
    if listens(port, process, within=60):
        return process
    process.kill()
    process.wait()
    raise AssertionError(f"the API did not start: {process.output()}")
