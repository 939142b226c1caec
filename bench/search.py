"""User search on a large account: the rows each page reads (bench/search_plans.py, under EXPLAIN)
and the pages per second the API serves for each class of text, loaded by wrk, on a table freshly
filled (never analyzed) and then analyzed.

    .venv/bin/python -m bench.search [--quick]
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import asyncpg

from bench import harness, search_plans
from core import db, sessions

ADMIN = "search-admin"


async def _admin_session(database: str, sessions_file: Any) -> None:
    """An admin of the searched account, whose session wrk presents."""
    pool = await db.create_pool(database, min_size=1, max_size=1)
    try:
        await pool.execute(
            """
            INSERT INTO users (id, account_id, account_name, name, email, is_admin, updated_at, event_id)
            VALUES ($1, $2, 'School', 'Search Admin', 'admin@school.edu', true, now(), gen_random_uuid())
            """,
            ADMIN,
            search_plans.ACCOUNT,
        )
        session_id = await sessions.open_session(pool, ADMIN, 24 * 3600)
    finally:
        await pool.close()
    sessions_file.write_text(f"{ADMIN} {session_id}\n")


async def run(profile: harness.Profile) -> dict[str, Any]:
    name = f"{harness.PREFIX}_search_{profile.name}"
    database = await harness.create_database(name)
    sessions_file = harness.WORK / f"search-{profile.name}-sessions.txt"
    result: dict[str, Any] = {"users": profile.search_users, "plans": [], "throughput": {}}
    try:
        db.migrate(database)
        connection = await asyncpg.connect(database)
        try:
            await search_plans.insert_accounts(connection, profile.search_users)
        finally:
            await connection.close()
        await _admin_session(database, sessions_file)
        for state in ("fresh", "analyzed"):
            if state == "analyzed":
                connection = await asyncpg.connect(database)
                try:
                    await connection.execute("VACUUM ANALYZE users")
                finally:
                    await connection.close()
            result["plans"] += [
                {key: value for key, value in row.items() if key != "scans"}
                for row in await search_plans.measure_state(database, state)
                if "rows_read" in row
            ]
            with harness.service_api(harness.ROOT / ".venv/bin/python", database) as base:
                for text_class, text in search_plans.TEXTS.items():
                    load = harness.wrk(
                        base,
                        # wrk's script formats the path (string.format): its % are doubled.
                        f"/api/users?q={quote(text)}&size=24".replace("%", "%%"),
                        sessions_file,
                        connections=min(profile.connections, 16),
                        seconds=profile.seconds / 2,
                    )
                    result["throughput"][f"{text_class} ({state})"] = load.per_second
                    result.setdefault("wrk", {})[f"{text_class} ({state})"] = load.as_dict()
    finally:
        await harness.drop_database(name)
    return result


if __name__ == "__main__":
    harness.main(run, __doc__)
