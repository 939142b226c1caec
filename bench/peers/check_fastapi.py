"""End-to-end check of the FastAPI peer (fastapi_updates.py), and of its answers against the service's.

    .venv/bin/python bench/peers/check_fastapi.py [--no-service] [--wrk SECONDS]

Run from the repository root with the project's venv (asyncpg, aiohttp, and the project's own
package for the second part); the peer runs from .venv-peers (bench/peers/README.md), started
exactly as documented there: `.venv-peers/bin/uvicorn bench.peers.fastapi_updates:app ...`.

1. The peer alone: a scratch database (`--database`, default peers_check) on the local PostgreSQL
   (`--database-server`) gets the up sections of the first two migrations and a seed inserted row
   by row (users, sessions, resources, versions, imports with pending, ignored and current courses,
   available updates). The peer's answers are compared with the JSON expected from README.md's
   rules, computed here from the seed: a full page, every page of size 1 through the cursor,
   another user's page, 401 without, with an unknown or with an expired session, 403 on another
   user's path, a refused size and a malformed cursor.
2. Unless `--no-service`: a second scratch database (NAME_service) migrated by the service's own
   migrations, the same seed applied through the service's own code (the consumer's
   `core.ingest.apply_events` for events, the API for the ignores), then the service
   (`python -m service api`) and the peer side by side on it: the same checks of the peer, and the
   service's items compared field by field with the peer's (cursors are each side's own).

`--wrk SECONDS` then loads each with wrk (2 threads, 32 connections, one user's first page) and
prints requests/s. The scratch databases are dropped at the end. Exits 1 on any mismatch.

The seed and the answers expected from it are in check_fastapi_seed.py, the scratch databases and
the processes in check_fastapi_fixtures.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
import re
import subprocess
import sys
import tempfile
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: bench/ is not part of the installed package

from bench.peers.check_fastapi_fixtures import (  # noqa: E402
    free_port,
    running,
    scratch_database,
    seed,
    seed_through_service,
    start_peer,
    start_service,
)
from bench.peers.check_fastapi_seed import ADA_EXPIRED, ADA_SESSION, BOB_SESSION, expected_items  # noqa: E402

# Checks ---------------------------------------------------------------------------------------


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def equal(self, what: str, got: object, want: object) -> None:
        if got == want:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failures.append(what)
            print(f"FAIL {what}\n  got:  {json.dumps(got, sort_keys=True)}\n  want: {json.dumps(want, sort_keys=True)}")


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as response:
        body = await response.json(content_type=None)
        return response.status, body


async def all_pages(http: aiohttp.ClientSession, base: str, user: str, headers: dict[str, str]) -> list[Any]:
    """Every item, one per page, following meta.cursor; checks that only the last page has none."""
    items: list[Any] = []
    cursor = None
    for _ in range(20):
        query = f"?size=1&cursor={cursor}" if cursor else "?size=1"
        status, body = await get(http, f"{base}/api/users/{user}/updates{query}", headers)
        if status != 200:
            raise RuntimeError(f"page answered {status}: {body}")
        items.extend(body["items"])
        cursor = body["meta"]["cursor"]
        if cursor is None:
            return items
    raise RuntimeError("more than 20 pages")


async def check_peer(checks: Checks, base: str) -> dict[str, Any]:
    ada = {"session-id": ADA_SESSION}
    async with aiohttp.ClientSession() as http:
        status, page = await get(http, f"{base}/api/users/u-ada/updates", ada)
        checks.equal("peer: full page, status", status, 200)
        checks.equal("peer: full page, items", page.get("items"), expected_items("u-ada"))
        checks.equal("peer: full page, meta", page.get("meta"), {"cursor": None})
        status, page = await get(http, f"{base}/api/users/u-bob/updates", {"session-id": BOB_SESSION})
        checks.equal("peer: another user's page", (status, page.get("items")), (200, expected_items("u-bob")))
        pages = await all_pages(http, base, "u-ada", ada)
        checks.equal("peer: pages of size 1 through the cursor", pages, expected_items("u-ada"))
        status, page = await get(http, f"{base}/api/users/u-ada/updates?size=2", ada)
        got = (len(page["items"]), page["meta"]["cursor"] is not None)
        checks.equal("peer: size=2 gives 2 items and a cursor", got, (2, True))
        status, _ = await get(http, f"{base}/api/users/u-ada/updates", {"X-Session-ID": ADA_SESSION})
        checks.equal("peer: X-Session-ID header also accepted", status, 200)
        status, _ = await get(http, f"{base}/api/users/u-ada/updates", {})
        checks.equal("peer: no session is 401", status, 401)
        status, _ = await get(http, f"{base}/api/users/u-ada/updates", {"session-id": "nope"})
        checks.equal("peer: unknown session is 401", status, 401)
        status, _ = await get(http, f"{base}/api/users/u-ada/updates", {"session-id": ADA_EXPIRED})
        checks.equal("peer: expired session is 401", status, 401)
        status, _ = await get(http, f"{base}/api/users/u-bob/updates", ada)
        checks.equal("peer: another user's path is 403", status, 403)
        status, _ = await get(http, f"{base}/api/users/u-ada/updates?size=101", ada)
        checks.equal("peer: size over 100 is refused (422, FastAPI's validation status)", status, 422)
        status, _ = await get(http, f"{base}/api/users/u-ada/updates?cursor=!!", ada)
        checks.equal("peer: malformed cursor is 400", status, 400)
        full = await get(http, f"{base}/api/users/u-ada/updates", ada)
        return {"items": full[1]["items"], "pages": pages}


async def check_service(checks: Checks, base: str, peer: dict[str, Any]) -> None:
    ada = {"X-Session-ID": ADA_SESSION}
    async with aiohttp.ClientSession() as http:
        status, page = await get(http, f"{base}/api/users/u-ada/updates", ada)
        checks.equal("service: full page, status", status, 200)
        checks.equal("service vs peer: full page items, field by field", page.get("items"), peer["items"])
        checks.equal("service: full page, meta", page.get("meta"), {"cursor": None})
        checks.equal("service vs peer: pages of size 1", await all_pages(http, base, "u-ada", ada), peer["pages"])
        status, page = await get(http, f"{base}/api/users/u-bob/updates", {"X-Session-ID": BOB_SESSION})
        checks.equal("service: another user's page", (status, page.get("items")), (200, expected_items("u-bob")))


WRK_SCRIPT = 'wrk.headers["session-id"] = "{session}"\nwrk.headers["X-Session-ID"] = "{session}"\n'


def run_wrk(name: str, url: str, seconds: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(session=ADA_SESSION))
    try:
        out = subprocess.run(
            ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    print(
        f"wrk {name}: {rate.group(1) if rate else '?'} requests/s, mean latency {latency.group(1) if latency else '?'}"
        f", non-2xx {non2xx.group(1) if non2xx else 0}"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="peers_check", help="scratch database name (and NAME_service)")
    parser.add_argument("--no-service", action="store_true", help="check the peer alone")
    parser.add_argument("--wrk", type=int, default=0, metavar="SECONDS", help="then load each with wrk")
    args = parser.parse_args()
    checks = Checks()

    print("== the peer on the first two migrations, rows inserted by hand")
    async with scratch_database(args.database_server, args.database) as dsn:
        await seed(dsn)
        peer_port = free_port()
        peer_base = f"http://127.0.0.1:{peer_port}"
        async with running(start_peer(dsn, peer_port), f"{peer_base}/docs"):
            await check_peer(checks, peer_base)
            if args.wrk and args.no_service:
                run_wrk("peer (FastAPI)", f"{peer_base}/api/users/u-ada/updates", args.wrk)

    if not args.no_service:
        print("== the peer and the service on the service's migrations, seeded through the service's code")
        async with scratch_database(args.database_server, f"{args.database}_service") as dsn:
            from core import db  # the project's package, installed in .venv

            db.migrate(dsn)
            service_port, peer_port = free_port(), free_port()
            service_base, peer_base = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{peer_port}"
            async with running(start_service(dsn, service_port), f"{service_base}/api/openapi.json"):
                await seed_through_service(dsn, service_base)
                async with running(start_peer(dsn, peer_port), f"{peer_base}/docs"):
                    peer = await check_peer(checks, peer_base)
                    await check_service(checks, service_base, peer)
                    if args.wrk:
                        run_wrk("peer (FastAPI)", f"{peer_base}/api/users/u-ada/updates", args.wrk)
                        run_wrk("service", f"{service_base}/api/users/u-ada/updates", args.wrk)

    print(f"{checks.passed} passed, {len(checks.failures)} failed")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
