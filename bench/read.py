"""The read path: the three pages of a user (updates, imports, favorites) served by this tree, by
the baseline release and, for updates, by the FastAPI peer, loaded by wrk in turns on the same
data; pgbench running each release's page SQL; and the buffers a page costs.

    .venv/bin/python -m bench.read [--quick]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sysconfig
import tempfile
from typing import Any

import asyncpg

from bench import dataset, harness, machine
from bench.baseline import COMMIT, baseline_python
from core import db, favorites, imports, updates

PAGES = {
    "updates": "/api/users/%s/updates",
    "imports": "/api/users/%s/imports",
    "favorites": "/api/users/%s/favorites",
}
FAVORITES_PER_USER = 30
PEERS_PYTHON = harness.ROOT / ".venv-peers" / "bin" / "python"

# This tree's page statements, as the handlers run them: $1 the session id's hash, ($2, $3) no
# cursor, $4 a page of 24 and one more row.
_STATEMENTS = {"updates": updates.PAGE_SQL, "imports": imports.PAGE_SQL, "favorites": favorites.PAGE_SQL}

# The baseline's statements, taken from its own tree (its module service.queries).
_BASELINE_SQL = """
from service import queries
print(queries._UPDATES.format(condition=""))
"""


def pgbench(database: str, sql: str, *, clients: int, seconds: float, variables: Mapping[str, str]) -> dict[str, float]:
    """`pgbench` running `sql` (a pgbench script: one statement, `\\set` lines before it) as
    prepared statements from `clients` connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", dir=harness.WORK) as script:
        script.write(sql)
        script.flush()
        command = [
            "pgbench",
            "--no-vacuum",
            "--protocol=prepared",
            f"--client={clients}",
            "--jobs=2",
            f"--time={max(1, round(seconds))}",
            "--report-per-command",
            f"--file={script.name}",
            *(f"--define={name}={value}" for name, value in variables.items()),
            database,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pgbench failed: {result.stderr}")
    output = result.stdout
    transactions = int(re.search(r"number of transactions actually processed: (\d+)", output).group(1))  # type: ignore[union-attr]
    failed = re.search(r"number of failed transactions: (\d+)", output)
    tps = float(re.search(r"tps = ([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", output).group(1))  # type: ignore[union-attr]
    return {
        "transactions": transactions,
        "per_second": tps,
        "latency_avg_ms": latency,
        "errors": int(failed.group(1)) if failed else 0,
    }


def _pgbench_script(statement: str, arguments: list[str]) -> str:
    """A pgbench script running `statement` for a random user; `arguments` replace $1, $2, ..."""
    for number in range(len(arguments), 0, -1):  # $10 before $1
        statement = statement.replace(f"${number}", arguments[number - 1])
    return "\\set n random(1, :users)\n" + " ".join(statement.split()) + ";\n"


def current_scripts() -> dict[str, str]:
    arguments = [dataset.SESSION_HASH_SQL, "NULL", "NULL", "25"]
    return {page: _pgbench_script(statement, arguments) for page, statement in _STATEMENTS.items()}


def baseline_script(python: Path, tree: Path) -> str:
    statement = subprocess.run(
        [str(python), "-c", _BASELINE_SQL], cwd=tree, check=True, capture_output=True, text=True
    ).stdout
    return _pgbench_script(statement, ["'u' || :n", "25"])


def _touched(node: dict[str, Any]) -> int:
    return int(node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0))


def _session_check(node: dict[str, Any]) -> int:
    """Buffers of the plan's scans of `sessions` (the session check of this tree's statements)."""
    own = _touched(node) if node.get("Relation Name") == "sessions" else 0
    return own + sum(_session_check(child) for child in node.get("Plans", []))


async def buffers(database: str, script: str, users: int, samples: int = 20) -> dict[str, float]:
    """Mean shared buffers a page statement touches (hit or read) on a warm cache, over users
    spread across the data set: in all, and of that the session check's."""
    statement = script.split("\n", 1)[1].rstrip().rstrip(";")
    connection = await asyncpg.connect(database)
    try:
        total = session = 0
        for sample in range(samples):
            user = str(1 + sample * users // samples)
            sql = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.replace(":n", user)
            await connection.fetchval(sql)  # warm
            plan = json.loads(await connection.fetchval(sql))[0]["Plan"]
            total, session = total + _touched(plan), session + _session_check(plan)
        return {"statement": total / samples, "session check": session / samples, "page": (total - session) / samples}
    finally:
        await connection.close()


def database_names(profile: harness.Profile) -> tuple[str, str]:
    """The names of the baseline's database and of this tree's, for `profile`."""
    return f"{harness.PREFIX}_read_{profile.name}_base", f"{harness.PREFIX}_read_{profile.name}_current"


def migrate_first(database: str) -> None:
    """This tree's first migration alone: the tables that the data set is written into, as every
    release has them (the baseline's migrations are that one only)."""
    dbmate = Path(sysconfig.get_path("scripts")) / "dbmate"
    with db.migrations_dir() as migrations, tempfile.TemporaryDirectory(dir=harness.WORK) as folder:
        shutil.copy(min(migrations.glob("*.sql")), folder)
        command = [str(dbmate), "--url", db.dbmate_url(database), "--migrations-dir", folder, "--no-dump-schema", "up"]
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "DATABASE_URL": ""})


async def prepare(profile: harness.Profile) -> tuple[str | None, str, Path]:
    """The baseline's database (the data set in the first migration's tables, as the baseline
    migrates them) and this tree's (a copy, migrated to this tree's schema); built once per
    profile, the baseline's kept between runs. Without `profile.side_by_side` (the quick profile),
    no baseline: this tree's database gets the data set in its first migration's tables, then the
    rest of its migrations, as the copy would (its name stands in for the baseline's: None)."""
    base_name, current_name = database_names(profile)
    sessions_file = harness.WORK / f"read-{profile.name}-sessions.txt"
    if profile.side_by_side:
        tree, python = baseline_python()
        if not (await harness.database_exists(base_name) and sessions_file.exists()):
            base = await harness.create_database(base_name)
            migrate = [str(python), "-m", "service", "migrate"]
            subprocess.run(migrate, env=harness.service_env(base), cwd=tree, check=True, capture_output=True)
            await dataset.build(base, profile.users, profile.updates_per_user, FAVORITES_PER_USER, sessions_file)
        current = await harness.create_database(current_name, template=base_name)
    else:
        current = await harness.create_database(current_name)
        migrate_first(current)
        await dataset.build(current, profile.users, profile.updates_per_user, FAVORITES_PER_USER, sessions_file)
    db.migrate(current)
    connection = await asyncpg.connect(current)
    try:
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return (harness.database_url(base_name) if profile.side_by_side else None), current, sessions_file


async def drop_databases(profile: harness.Profile) -> None:
    """The databases that `prepare` keeps, dropped (the quick run leaves none behind)."""
    for name in database_names(profile):
        await harness.drop_database(name)


async def run(profile: harness.Profile) -> dict[str, Any]:
    harness.require_tools()
    base, current, sessions_file = await prepare(profile)
    # The baseline's database, tree and interpreter, in the profile that measures it (not the quick one).
    baseline = (base, *baseline_python()) if base is not None else None
    clients = profile.connections
    pgbench_vars = {"users": str(profile.users)}
    result: dict[str, Any] = {"connections": clients, "seconds": profile.seconds}
    if baseline is not None:
        result["baseline"] = COMMIT
    else:
        result["skipped"] = {
            f"the release at {COMMIT}": "quick run: the baseline release is measured by `make bench`",
            "FastAPI peer": "quick run: the peers are measured by `make bench`",
        }

    scripts = current_scripts()
    result["buffers"] = {
        f"{page} (this tree)": await buffers(current, script, profile.users) for page, script in scripts.items()
    }
    result["pgbench"] = {
        "updates (this tree)": pgbench(
            current, scripts["updates"], clients=clients, seconds=profile.seconds, variables=pgbench_vars
        ),
    }
    if baseline is not None:
        base_url, tree, python = baseline
        old_script = baseline_script(python, tree)
        result["buffers"][f"updates ({COMMIT})"] = await buffers(base_url, old_script, profile.users)
        result["pgbench"][f"updates ({COMMIT})"] = pgbench(
            base_url, old_script, clients=clients, seconds=profile.seconds, variables=pgbench_vars
        )

    with ExitStack() as stack:
        ours = stack.enter_context(harness.api_server(harness.ROOT / ".venv/bin/python", current))
        servers = {"this tree": ours.url}
        if baseline is not None:
            base_url, tree, python = baseline
            servers[COMMIT] = stack.enter_context(harness.service_api(python, base_url, cwd=tree))
            if PEERS_PYTHON.exists():
                servers["FastAPI peer"] = stack.enter_context(fastapi_peer(base_url))
        loads: dict[str, list[harness.Load]] = {}
        rounds = 3
        for _ in range(rounds):  # in turns, so that the machine's drift falls on each alike
            for page, path in PAGES.items():
                for name, url in servers.items():
                    if name == "FastAPI peer" and page != "updates":
                        continue
                    load = harness.wrk(url, path, sessions_file, connections=clients, seconds=profile.seconds / rounds)
                    loads.setdefault(f"{page} ({name})", []).append(load)
        result["wrk"] = {key: combine(runs).as_dict() for key, runs in loads.items()}
        # Where this tree's API process spends its time on the updates page.
        with machine.profiled(ours.pid, profile.seconds / rounds) as frames:
            harness.wrk(
                ours.url, PAGES["updates"], sessions_file, connections=clients, seconds=profile.seconds / rounds
            )
        result["profile of the API process (updates)"] = frames
    return result


async def run_alone(profile: harness.Profile) -> dict[str, Any]:
    """`python -m bench.read`: as `run`; a quick run drops its databases after."""
    try:
        return await run(profile)
    finally:
        if not profile.side_by_side:
            await drop_databases(profile)


def combine(runs: list[harness.Load]) -> harness.Load:
    """Several runs of equal length as one: requests summed, rates averaged, the worst tail."""
    return harness.Load(
        requests=sum(run.requests for run in runs),
        per_second=sum(run.per_second for run in runs) / len(runs),
        p50_ms=sorted(run.p50_ms for run in runs)[len(runs) // 2],
        p99_ms=max(run.p99_ms for run in runs),
        errors=sum(run.errors for run in runs),
    )


@contextmanager
def fastapi_peer(database: str) -> Iterator[str]:
    """The FastAPI peer (bench/peers/README.md) on the baseline's database; yields its base URL."""
    port = harness.free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(PEERS_PYTHON), "-m", "uvicorn", "bench.peers.fastapi_updates:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with harness.process(command, {"DATABASE_URL": database}, ready_url=f"{base}/docs", cwd=harness.ROOT):
        yield base


if __name__ == "__main__":
    harness.main(run_alone, __doc__)
