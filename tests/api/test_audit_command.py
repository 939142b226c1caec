"""`commons-users audit`: the README's commands on a table with drift of every kind, its exit
statuses, and the metric it pushes. (The README's examples and their output, against `make run`:
tests/devtools/test_make_run.py.)"""

import asyncio
import os
import re
import shlex
import subprocess
import sys

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests import readme
from tests.drift import CONSISTENT_ROWS, corrupt, seed, table
from tests.factories import JWT_SECRET


def examples() -> list[list[str]]:
    """The audit's command lines in the section's sh block, without their comments."""
    lines = [shlex.split(line, comments=True) for line in readme.sh_lines("### Drift audit")]
    return [line for line in lines if line[0] == "commons-users"]


def audit(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JWT_SECRET": JWT_SECRET, "DATABASE_URL": database_url},
    )


def summary(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.splitlines()[-1]


async def test_the_readme_examples_report_each_difference_and_the_repair_fixes_them(pool, database_url):
    await seed(pool)
    await corrupt(pool)
    lines = examples()
    assert [line[:2] for line in lines] == [["commons-users", "audit"]] * len(lines)
    assert lines[-1][2:] == ["--repair"]
    for line in lines:
        result = await asyncio.to_thread(audit, database_url, *line[2:])
        assert result.returncode == 1, result.stderr
    reported = result.stdout.splitlines()[:-1]  # the repair's report: every difference
    assert [line.split()[0] for line in reported] == ["missing", "extra", "different", "different", "extra"]
    assert summary(result) == "audited 13 (user, resource) pairs: 1 missing, 2 extra, 2 different; repaired 5 rows"
    assert len(await table(pool)) == CONSISTENT_ROWS

    result = await asyncio.to_thread(audit, database_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "audited 12 (user, resource) pairs: 0 missing, 0 extra, 0 different\n"


async def test_the_audit_of_a_table_without_drift_exits_0_and_changes_nothing(pool, database_url):
    await seed(pool)
    before = await table(pool)
    result = await asyncio.to_thread(audit, database_url, "--repair", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert summary(result).endswith("0 missing, 0 extra, 0 different; repaired 0 rows")
    assert await table(pool) == before


async def test_the_drift_is_pushed_to_a_pushgateway(pool, database_url):
    await seed(pool)
    await corrupt(pool)
    pushed: list[tuple[str, str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        pushed.append((request.method, request.path, await request.text()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    async with TestServer(app) as gateway:
        result = await asyncio.to_thread(audit, database_url, "--pushgateway", str(gateway.make_url("")))
    assert result.returncode == 1, result.stderr
    [(method, path, body)] = pushed
    assert (method, path) == ("PUT", "/metrics/job/commons-users-audit")
    for kind, rows in (("missing", 1), ("extra", 2), ("different", 2)):
        assert f'commons_users_audit_drift_rows{{kind="{kind}"}} {rows:.1f}' in body


async def test_an_audit_that_cannot_run_exits_2(database_url, pool):
    await seed(pool)
    unreachable = re.sub(r"@[^/]+/", "@127.0.0.1:9/", database_url)  # the discard port: nothing listens
    result = await asyncio.to_thread(audit, unreachable)
    assert result.returncode == 2
    assert "the audit failed" in result.stderr and "Traceback" not in result.stderr

    result = await asyncio.to_thread(audit, database_url, "--user", "u-ada", "--resource", "r-fractions")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    result = await asyncio.to_thread(audit, database_url, "--batch-size", "0")
    assert result.returncode == 2 and "not a positive whole number: '0'" in result.stderr
