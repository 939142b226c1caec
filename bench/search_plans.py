"""User search's work per page (DESIGN §6, "Search"): for each class of text, the rows every
statement of `core.users.search_users` reads and the buffers it touches (EXPLAIN ANALYZE, BUFFERS),
on an account of 1,000,000 users, freshly inserted (never analyzed or vacuumed), then analyzed.

    .venv/bin/python -m bench.search_plans [--users N] [--database NAME] [--server URL]

It creates a scratch database (`--database`, default `bench_search_plans`) on the server (default
`postgresql://postgres@127.0.0.1:5432/postgres`), migrates it, and inserts the searched account of
`--users` users and another account of a tenth as many, autovacuum off on the table so that the
fresh state stays fresh. Names are a first name and a last name from fixed lists (in name order the
account is grouped by first name), e-mails `first.lastN@school.edu`, one in eight at
`staff.school.edu`. The classes of text:

- common early: `staff`, one user in eight, spread evenly in name order;
- common late: `ann`, the four first names that hold it sort last (a twelfth of the account, none
  among its first 87.5 %: 875,000 names of 1,000,000);
- rare: `qzx`, five users (a last name);
- rare, common trigrams: `42424@staff`, ten users (e-mail numbers ending in 42424 are all at the
  staff domain), though each of its trigrams is in thousands: `424` and `242` in some 4,000 users,
  `24 ` (a word ending in 24) in 10,000, those of `staff` in 125,000, `  s` in every one;
- absent: `zzzq`;
- absent, common trigrams: `edu ada`, whose trigrams every Ada or Adam holds (40,000 users);
- full name: `noah rossi`, some 800 users, its words' trigrams each in 20,000 to 40,000.

For each state and class it reads the first three pages of 25 (following the cursor) and prints, per
page: the items and whether a cursor follows, the statements run (one), the rows read (the rows out of
every scan node, times its loops, plus the rows its filters and rechecks removed; the limit is
5,000), the shared buffers hit or read, the execution time EXPLAIN reports, and the median wall time
of the page run plainly (`search_users` on a pool, 20 times). Then, per state, the worst class's
pages per second over the best class's (the first pages), and how many pages a client follows to
reach each class's first match. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
import json
import statistics
import time
from typing import Any

import asyncpg
from yarl import URL

from core import db
from core.users import SearchPage, search_users

SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ACCOUNT = "acct-search"
OTHER_ACCOUNT = "acct-other"
PAGE_SIZE = 25
PAGES = 3
RUNS = 20  # plain runs of a page, for its median wall time
FIRST_MATCH_PAGES = 2_000  # at most, when following cursors to the first match
ROW_LIMIT = 5_000

# Space-separated. In name order the account is grouped by first name; only the four first names
# that sort last hold "ann".
FIRST_NAMES = (
    "Aaron Abel Ada Adam Adrian Agnes Albert Alice Amir Boris Carla Chloe David Diego Elena Emil Farah Felix Greta "
    "Hugo Ines Ivan Jonas Julia Karim Laura Leon Lucia Marco Maya Nadia Noah Olga Oscar Paula Pedro Rosa Ruben Sofia "
    "Tomas Ursula Victor Xenia Yusuf Vianney Yanna Zanna Zannie"
)
LAST_NAMES = (
    "Abbott Berg Costa Diaz Eriksen Fischer Garcia Hofer Ito Jensen Johnsson Kowalski Larsson Moreau Nilsson Novak "
    "Okafor Persson Quist Rossi Silva Tanaka Urban Vogel Weber Young"
)
RARE_LAST_NAME = "Qzxwell"
TEXTS = {
    "common early": "staff",
    "common late": "ann",
    "rare": "qzx",
    "rare, common trigrams": "42424@staff",
    "absent": "zzzq",
    "absent, common trigrams": "edu ada",
    "full name": "noah rossi",
}

# User n of an account: a first and a last name drawn by hashes of n; five users of the account
# have the rare last name, one in eight an e-mail at the staff domain.
INSERT_USERS = """
INSERT INTO users (id, account_id, account_name, name, email, updated_at, event_id)
SELECT $1 || '-' || n, $1, 'School', first || ' ' || last,
       lower(first) || '.' || lower(last) || n || CASE WHEN n % 8 = 0 THEN '@staff.school.edu' ELSE '@school.edu' END,
       now(), gen_random_uuid()
FROM generate_series(1, $2::int) AS n,
     LATERAL (SELECT string_to_array($3, ' ') AS firsts, string_to_array($4, ' ') AS lasts) AS names,
     LATERAL (SELECT firsts[1 + (hashint4(n) & 2147483647) % cardinality(firsts)] AS first,
                     CASE WHEN n % greatest($2::int / 5, 1) = 1 THEN $5
                          ELSE lasts[1 + (hashint4(n + 7919) & 2147483647) % cardinality(lasts)]
                     END AS last) AS drawn
"""


async def insert_accounts(conn: asyncpg.Connection, users: int) -> None:
    """The searched account of `users` users and another of a tenth as many, on a table that
    autovacuum leaves alone (so that it stays never analyzed until the caller analyzes it)."""
    await conn.execute("ALTER TABLE users SET (autovacuum_enabled = false)")
    for account, count in ((ACCOUNT, users), (OTHER_ACCOUNT, max(users // 10, 1))):
        await conn.execute(INSERT_USERS, account, count, FIRST_NAMES, LAST_NAMES, RARE_LAST_NAME)


class ExplainingPool:
    """Stands for the pool in `search_users`: runs each statement under EXPLAIN (ANALYZE, BUFFERS)
    and keeps the plan, then runs it plainly for its rows."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.plans: list[dict[str, Any]] = []

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        explained = await self.conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
        self.plans.append(json.loads(explained)[0])
        return await self.conn.fetch(sql, *args)


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def rows_read(plan: dict[str, Any]) -> int:
    """The rows out of every scan node, times its loops, plus the rows filters and rechecks removed
    (EXPLAIN shows both per loop)."""
    total = 0.0
    for node in plan_nodes(plan["Plan"]):
        loops = node.get("Actual Loops", 0)
        if node["Node Type"].endswith("Scan"):
            total += node.get("Actual Rows", 0) * loops
        for removed in ("Rows Removed by Filter", "Rows Removed by Index Recheck", "Rows Removed by Join Filter"):
            total += node.get(removed, 0) * loops
    return round(total)


def buffers(plan: dict[str, Any]) -> int:
    """Shared buffers hit or read by the statement (the top node counts its children's)."""
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


def scans(plan: dict[str, Any]) -> list[str]:
    """The scans that ran (not those a one-time filter skipped), each with its index."""
    return [
        node["Node Type"] + (f" on {node['Index Name']}" if "Index Name" in node else "")
        for node in plan_nodes(plan["Plan"])
        if node["Node Type"].endswith("Scan") and node.get("Actual Loops", 0) > 0 and node["Node Type"] != "CTE Scan"
    ]


async def explained_page(
    conn: asyncpg.Connection, text: str, after: tuple[str, str] | None
) -> tuple[SearchPage, list[dict[str, Any]]]:
    explaining = ExplainingPool(conn)
    page = await search_users(explaining, ACCOUNT, text, after, PAGE_SIZE)  # type: ignore[arg-type]
    return page, explaining.plans


async def wall_ms(pool: asyncpg.Pool, text: str, after: tuple[str, str] | None) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        await search_users(pool, ACCOUNT, text, after, PAGE_SIZE)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def pages_to_first_match(pool: asyncpg.Pool, text: str) -> tuple[int, float]:
    """How many pages a client reads, following the cursor, until one holds a match or the cursor
    ends; and how long that took."""
    start, after, pages = time.perf_counter(), None, 0
    while pages < FIRST_MATCH_PAGES:
        page = await search_users(pool, ACCOUNT, text, after, PAGE_SIZE)
        pages += 1
        if page.users or page.after is None:
            break
        after = page.after
    return pages, time.perf_counter() - start


async def measure_state(url: str, state: str) -> list[dict[str, Any]]:
    results = []
    conn = await asyncpg.connect(url)
    pool = await db.create_pool(url, min_size=1, max_size=1)
    try:
        for text_class, text in TEXTS.items():
            after: tuple[str, str] | None = None
            for number in range(1, PAGES + 1):
                page, plans = await explained_page(conn, text, after)
                results.append(
                    {
                        "state": state,
                        "class": text_class,
                        "text": text,
                        "page": number,
                        "items": len(page.users),
                        "next": page.after is not None,
                        "statements": len(plans),
                        "rows_read": sum(rows_read(plan) for plan in plans),
                        "buffers": sum(buffers(plan) for plan in plans),
                        "explain_ms": round(sum(plan["Execution Time"] for plan in plans), 3),
                        "wall_ms": round(await wall_ms(pool, text, after), 3),
                        "scans": sorted({scan for plan in plans for scan in scans(plan)}),
                    }
                )
                if page.after is None:
                    break
                after = page.after
        for text_class, text in TEXTS.items():
            pages, seconds = await pages_to_first_match(pool, text)
            results.append(
                {
                    "state": state,
                    "class": text_class,
                    "text": text,
                    "pages_to_first_match": pages,
                    "seconds_to_first_match": round(seconds, 3),
                }
            )
    finally:
        await pool.close()
        await conn.close()
    return results


async def measure(server_url: str, users: int, database: str = "bench_search_plans") -> list[dict[str, Any]]:
    """Pages of every class of text on a scratch database of `users` users in the searched account,
    fresh and then analyzed: one dict per page (and per class, how far the first match is)."""
    admin = await asyncpg.connect(server_url)
    url = str(URL(server_url).with_path(f"/{database}"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
        db.migrate(url)
        conn = await asyncpg.connect(url)
        try:
            await insert_accounts(conn, users)
        finally:
            await conn.close()
        results = await measure_state(url, "fresh")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("VACUUM ANALYZE users")
        finally:
            await conn.close()
        return results + await measure_state(url, "analyzed")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def report(results: list[dict[str, Any]], users: int) -> str:
    lines = [
        f"User search, {users:,} users in the account, pages of {PAGE_SIZE} (rows read: at most {ROW_LIMIT:,})",
        "",
    ]
    header = f"{'state':<9} {'class':<23} {'text':<11} {'page':>4} {'items':>5} {'next':>4} {'stmts':>5} "
    header += f"{'rows read':>9} {'buffers':>7} {'explain ms':>10} {'wall ms':>8}  scans"
    lines += [header, "-" * len(header)]
    pages = [r for r in results if "page" in r]
    for r in pages:
        lines.append(
            f"{r['state']:<9} {r['class']:<23} {r['text']:<11} {r['page']:>4} {r['items']:>5} "
            f"{'yes' if r['next'] else 'no':>4} {r['statements']:>5} {r['rows_read']:>9,} {r['buffers']:>7,} "
            f"{r['explain_ms']:>10.2f} {r['wall_ms']:>8.2f}  {', '.join(r['scans'])}"
        )
    lines.append("")
    for state in dict.fromkeys(r["state"] for r in pages):
        firsts = {r["class"]: r for r in pages if r["state"] == state and r["page"] == 1}
        per_second = {name: 1000 / r["wall_ms"] for name, r in firsts.items()}
        worst, best = min(per_second, key=per_second.__getitem__), max(per_second, key=per_second.__getitem__)
        most = max(r["rows_read"] for r in pages if r["state"] == state)
        ratio = per_second[worst] / per_second[best]
        lines.append(
            f"{state}: most rows read by a page {most:,}; first pages per second, worst ({worst}) "
            f"{per_second[worst]:,.0f} / best ({best}) {per_second[best]:,.0f} = {ratio:.2f}"
        )
        for r in results:
            if r["state"] == state and "pages_to_first_match" in r:
                lines.append(
                    f"  {r['class']:<23} first match on page {r['pages_to_first_match']:,} "
                    f"({r['seconds_to_first_match']:.2f} s following cursors)"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000, help="users of the searched account")
    parser.add_argument("--database", default="bench_search_plans", help="the scratch database (dropped at the end)")
    parser.add_argument("--server", default=SERVER_URL, help="the PostgreSQL server")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.server, args.users, args.database))
    print(report(results, args.users))


if __name__ == "__main__":
    main()
