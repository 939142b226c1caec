"""`make run` (devtools/run.py): the README's examples, run with curl against what it serves."""

from contextlib import contextmanager
import json
import os
from pathlib import Path
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
from typing import IO

import asyncpg
import pytest
from yarl import URL

from devtools.tansu import free_port
from tests import readme
from tests.factories import JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]


def readme_curl_lines() -> list[str]:
    return [line for line in readme.sh_lines("## Examples") if line.startswith("curl ")]


@contextmanager
def local_service(database_url: str, run_dir: Path, welcome: list[str] | None = None):
    """`python -m devtools.run` (what `make run` runs); yields the variables of its `export` line
    once its welcome is printed (its lines go to `welcome`)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.run", "--port", str(free_port()), "--run-dir", str(run_dir)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    printed = welcome if welcome is not None else []
    try:
        for line in process.stdout:
            printed.append(line.rstrip("\n"))
            if line.startswith("More examples are in README.md"):
                exports = [line for line in printed if line.startswith("export ")]
                assert exports, "make run's service printed no export line"
                yield dict(re.findall(r"(\w+)=(\S+)", exports[0]))
                break
        else:
            pytest.fail("make run's service printed no welcome")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        process.stdout.close()


@pytest.fixture
async def scratch_database_url(database_url):
    """The URL of a database that does not exist yet (make run creates it), dropped afterwards."""
    server = URL(database_url).with_path("/postgres")
    name = f"commons_users_local_{secrets.token_hex(4)}"
    yield str(server.with_path(f"/{name}"))
    conn = await asyncpg.connect(str(server))
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def run_curl(line: str, variables: dict[str, str]) -> subprocess.CompletedProcess:
    # --fail-with-body makes curl exit non-zero on any 4xx or 5xx answer.
    return subprocess.run(
        ["bash", "-c", f'curl() {{ command curl --fail-with-body --max-time 10 "$@"; }}\n{line}'],
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_readme_has_examples_for_every_area():
    lines = readme_curl_lines()
    for path in ("/imports", "/favorites", "/profile", "/api/users?q=", "/api/sessions", "onlyImported"):
        assert any(path in line for line in lines), path


def readme_stream_line() -> str:
    """The `curl -N` line of the README's live updates section."""
    [line] = readme.sh_lines("## Live updates")
    return line


def test_readme_examples_work(scratch_database_url, tmp_path):
    """The examples, with the README's live update stream open meanwhile: the ignore among the
    examples changes the teacher's update, and the stream shows it."""
    welcome: list[str] = []
    with local_service(scratch_database_url, tmp_path, welcome) as variables:
        assert variables["BASE"].startswith("http://127.0.0.1:")
        assert readme_stream_line() in welcome  # make run prints it
        stream = subprocess.Popen(
            ["bash", "-c", f"exec {readme_stream_line()}"],
            env={**os.environ, **variables},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert stream.stdout is not None
        events = read_lines(stream.stdout)
        try:
            assert lines_until(events, "data: ")[-2:] == ["event: ready", "data: {}"]
            for line in readme_curl_lines():
                result = run_curl(line, variables)
                assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
                if "-X DELETE" not in line and "/ignore" not in line:  # those answer 204, no body
                    assert result.stdout.strip(), line
            event = lines_until(events, "data: ")
            assert event[-2:-1] == ["event: update"] and "r-fractions" in event[-1], event
        finally:
            stream.terminate()
            stream.wait(timeout=10)
            stream.stdout.close()
    assert not (tmp_path / "pgdata").exists()  # the live server was used


def test_make_run_falls_back_to_an_embedded_postgres(tmp_path):
    with local_service("postgresql://postgres@127.0.0.1:1/commons_users", tmp_path) as variables:
        result = run_curl(readme_curl_lines()[0], variables)
        assert result.returncode == 0, result.stderr
        assert [item["resource"]["id"] for item in json.loads(result.stdout)["items"]] == ["r-fractions"]
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()


def lines_until(lines: queue.Queue[str], prefix: str) -> list[str]:
    """The stream's next lines, up to the first one that starts with `prefix` (within 20 s)."""
    taken: list[str] = []
    while not (taken and taken[-1].startswith(prefix)):
        try:
            taken.append(lines.get(timeout=20))
        except queue.Empty:
            pytest.fail(f"no line starting with {prefix!r} within 20 s: {taken}")
    return taken


def read_lines(output: IO[str]) -> queue.Queue[str]:
    """The lines of `output` as they come, read by a thread of their own."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in output:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines
