"""`make run` (devtools/run.py): the README's lines, run as written and in order against what it
serves, from a shell where its `export` line was pasted; twice, on the same database."""

import asyncio
import json
import re
import secrets
import shlex
import subprocess
import sys

import asyncpg
import pytest
from yarl import URL

from tests import readme
from tests.devtools.local import ROOT, SHELL_ENV, Service, lines_until, local_service, read_lines

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def readme_curl_lines() -> list[str]:
    return [line for line in readme.sh_lines("## Examples") if line.startswith("curl ")]


def sample(heading: str, pattern: str) -> list[str]:
    """The lines of the section's first plain code block that `pattern` matches."""
    found = re.search(rf"```\n({pattern}.*?)```", readme.section(heading), re.DOTALL)
    assert found is not None, (heading, pattern)
    return found.group(1).splitlines()


@pytest.fixture
async def scratch_database_url(database_url):
    """The URL of a database that does not exist yet (make run creates it), dropped afterwards."""
    server = URL(database_url).with_path("/postgres")
    name = f"commons_users_local_{secrets.token_hex(4)}"
    yield str(server.with_path(f"/{name}"))
    conn = await asyncpg.connect(str(server))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def test_readme_has_examples_for_every_area():
    lines = readme_curl_lines()
    for path in ("/imports", "/favorites", "/profile", "/api/users?q=", "/api/sessions", "onlyImported"):
        assert any(path in line for line in lines), path


def run_ok(service: Service, line: str, status: int = 0) -> list[str]:
    result = service.shell(line)
    assert result.returncode == status, f"{line}\n{result.stdout}{result.stderr}"
    return result.stdout.splitlines()


def examples_and_live_updates(service: Service) -> None:
    """The Examples with the Live updates' stream open, then the Live updates' own change."""
    stream_line, *changes = readme.sh_lines("## Live updates")
    assert " -N " in stream_line and stream_line in service.output  # make run prints it too
    stream = service.stream(stream_line)
    assert stream.stdout is not None
    events, _ = read_lines(stream.stdout)
    try:
        assert lines_until(events, "data: ")[-2:] == ["event: ready", "data: {}"]
        for line in readme_curl_lines():
            printed = run_ok(service, line)
            if "-X DELETE" not in line and "/ignore" not in line:  # those answer 204, no body
                assert printed, line
        event = lines_until(events, "data: ")
        assert event[-2] == "event: update", event
        assert [course["courseId"] for course in json.loads(event[-1][6:])["courses"]] == ["c-102"]  # c-101 ignored
        assert changes, "the Live updates section changes nothing"
        for line in changes:
            assert run_ok(service, line) == []
        shown = sample("## Live updates", r"id: \d+\nevent: update\ndata: \{\"resourceId")
        event = lines_until(events, "data: ")
        assert event[-2:] == shown[1:3], event  # its id aside
    finally:
        stream.terminate()
        stream.wait(timeout=10)
        stream.stdout.close()


def drift_audit(service: Service) -> None:
    lines = readme.sh_lines("### Drift audit")
    assert lines[0].startswith("psql ") and all(line.startswith("commons-users audit") for line in lines[1:])
    printed = {line: run_ok(service, line, 0 if line.startswith("psql ") else 1) for line in lines}
    report = printed[lines[1]]
    assert report == sample("### Drift audit", "different "), "the README's sample is what it prints"
    assert run_ok(service, "commons-users audit")[-1].endswith(" 0 missing, 0 extra, 0 different")  # repaired


def dead_letters(service: Service) -> None:
    printed = {}
    for line in readme.sh_lines("### Dead letters"):
        assert line.startswith("commons-users dlq ")
        printed[shlex.join(shlex.split(line, comments=True))] = run_ok(service, line)
    shown: dict[str, list[str]] = {}
    for line in sample("### Dead letters", r"\$ "):
        if line.startswith("$ "):
            output = shown.setdefault(shlex.join(shlex.split(line[2:])), [])
        else:
            output.append(line)
    assert shown and set(shown) <= set(printed)
    for command, lines in shown.items():  # what the command printed, but for the times
        assert masked(printed[command]) == masked(lines), command


def masked(lines: list[str]) -> list[str]:
    return [re.sub(TIME, "TIME", line) for line in lines]


def test_the_readme_lines_run_as_written_and_again_after_a_second_make_run(scratch_database_url, tmp_path):
    for _ in range(2):  # the second make run starts the demo afresh on the same database
        with local_service(scratch_database_url, tmp_path) as service:
            assert service.variable("BASE").startswith("http://127.0.0.1:")
            assert service.shell("command -v commons-users").stdout.strip().endswith("/.venv/bin/commons-users")
            examples_and_live_updates(service)
            drift_audit(service)
            dead_letters(service)
    assert not (tmp_path / "pgdata").exists()  # the live server was used


def test_make_run_falls_back_to_an_embedded_postgres(tmp_path):
    with local_service("postgresql://postgres@127.0.0.1:1/commons_users", tmp_path) as service:
        printed = run_ok(service, readme_curl_lines()[0])
        assert [item["resource"]["id"] for item in json.loads(printed[0])["items"]] == ["r-fractions"]
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def reset(database_url: str) -> str:
    """`make reset`'s database step; what it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "devtools.database"],
        cwd=ROOT,
        env={**SHELL_ENV, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_make_reset_drops_the_database_of_make_run_and_no_other(scratch_database_url, tmp_path):
    name = URL(scratch_database_url).path.lstrip("/")
    server = str(URL(scratch_database_url).with_path("/postgres"))
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # not make run's
        assert await asyncio.to_thread(reset, scratch_database_url) == f"{name} is not make run's: left alone"
        await conn.execute(f'DROP DATABASE "{name}"')
        with local_service(scratch_database_url, tmp_path):  # creates it, as its own
            pass
        assert await asyncio.to_thread(reset, scratch_database_url) == f"dropped database {name}"
        assert not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name)
    finally:
        await conn.close()
