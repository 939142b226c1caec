"""The drift audit (`commons-users audit`, README "Drift audit") on the read path's data set: its
2,000,000 available updates (the full profile), whose courses the read model's migration computed
from their definition.

    .venv/bin/python -m bench.audit [--quick]

On a copy of that database (bench/read.py builds it when missing), the command runs as a separate
process, three times:

(a) `clean`: the whole table as it is: no difference is expected;
(b) `repair`: `--repair`, after `DRIFTED_ROWS` rows of each kind of drift were written (deleted,
    added for pairs without a pending course, changed): every difference is expected in the
    report, and repaired;
(c) `after repair`: a plain audit that must find nothing.

For each: seconds, (user, resource) pairs a second, the exit status, the summary line, and the
process's resident set (VmRSS) sampled every 0.2 s: after the first 10 % of the run (the warm-up)
and at its highest, so that a resident set that grew with the rows audited would show.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from typing import Any

import asyncpg

from bench import harness, read
from bench.memory import rss_kib

DRIFTED_ROWS = 1000
WARM_UP = 0.1  # of a run's duration: start-up, the pool, the first batches


def run_audit(database: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, **harness.service_env(database)}
    command = [str(harness.ROOT / ".venv/bin/python"), "-m", "service", "audit", *args]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+", dir=harness.WORK) as report:  # a line per difference, then the summary
        process = subprocess.Popen(command, env=env, cwd=harness.WORK, stdout=report, stderr=subprocess.DEVNULL)
        samples: list[tuple[float, int]] = []
        while process.poll() is None:
            try:
                samples.append((time.perf_counter() - started, rss_kib(process.pid)))
            except (OSError, RuntimeError):  # it just exited
                break
            time.sleep(0.2)
        process.wait()
        seconds = time.perf_counter() - started
        report.seek(0)
        lines = report.read().splitlines()
    summary = lines[-1] if lines else ""
    pairs = int(summary.split()[1]) if summary.startswith("audited ") else 0
    warmed_up = next((rss for at, rss in samples if at >= WARM_UP * seconds), samples[-1][1] if samples else 0)
    return {
        "seconds": round(seconds, 2),
        "pairs_per_second": round(pairs / seconds),
        "exit": process.returncode,
        "summary": summary,
        "differences_printed": max(len(lines) - 1, 0),
        "rss_mib_after_warm_up": round(warmed_up / 1024, 1),
        "rss_mib_max": round(max((rss for _, rss in samples), default=0) / 1024, 1),
    }


async def drift(database: str) -> None:
    """DRIFTED_ROWS rows of each kind: rows deleted, rows added for a (user, resource) pair that
    has no pending course, rows whose pending courses are emptied."""
    connection = await asyncpg.connect(database)
    try:
        await connection.execute(
            """
            DELETE FROM available_updates
            WHERE ctid IN (SELECT ctid FROM available_updates ORDER BY user_id, resource_id LIMIT $1)
            """,
            DRIFTED_ROWS,
        )
        await connection.execute(
            """
            INSERT INTO available_updates (user_id, resource_id, version_number, published_at, courses)
            SELECT 'u' || n, 'r-absent', 2, now(), '[]' FROM generate_series(1, $1::int) AS n
            """,
            DRIFTED_ROWS,
        )
        await connection.execute(
            """
            UPDATE available_updates SET courses = '[]'
            WHERE ctid IN (SELECT ctid FROM available_updates WHERE resource_id <> 'r-absent'
                           ORDER BY user_id DESC, resource_id DESC LIMIT $1)
            """,
            DRIFTED_ROWS,
        )
    finally:
        await connection.close()


async def run(profile: harness.Profile) -> dict[str, Any]:
    current = f"{harness.PREFIX}_read_{profile.name}_current"
    if not await harness.database_exists(current):
        await read.prepare(profile)
    name = f"{harness.PREFIX}_audit_{profile.name}"
    database = await harness.create_database(name, template=current)
    try:
        connection = await asyncpg.connect(database)
        try:
            rows = await connection.fetchval("SELECT count(*) FROM available_updates")
        finally:
            await connection.close()
        result: dict[str, Any] = {"available_updates": rows, "drifted_rows_of_each_kind": DRIFTED_ROWS}
        result["clean"] = await asyncio.to_thread(run_audit, database)
        await drift(database)
        result["repair"] = await asyncio.to_thread(run_audit, database, "--repair")
        result["after repair"] = await asyncio.to_thread(run_audit, database)
        return result
    finally:
        await harness.drop_database(name)


if __name__ == "__main__":
    harness.main(run, __doc__)
