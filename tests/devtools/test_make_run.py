"""`make run` (devtools/run.py): the README's examples, run with curl against what it serves."""

from contextlib import contextmanager
import json
import os
from pathlib import Path
import re
import secrets
import signal
import subprocess
import sys

import asyncpg
import pytest
from yarl import URL

from devtools.tansu import free_port
from tests.factories import JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_curl_lines() -> list[str]:
    examples = README.read_text().split("## Examples", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", examples, re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


@contextmanager
def local_service(database_url: str, run_dir: Path):
    """`python -m devtools.run` (what `make run` runs); yields the variables of its `export` line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.run", "--port", str(free_port()), "--run-dir", str(run_dir)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.startswith("export "):
                yield dict(re.findall(r"(\w+)=(\S+)", line))
                break
        else:
            pytest.fail("make run's service printed no export line")
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


def test_readme_examples_work(scratch_database_url, tmp_path):
    with local_service(scratch_database_url, tmp_path) as variables:
        assert variables["BASE"].startswith("http://127.0.0.1:")
        for line in readme_curl_lines():
            result = run_curl(line, variables)
            assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
            if "-X DELETE" not in line and "/ignore" not in line:  # those answer 204, no body
                assert result.stdout.strip(), line
    assert not (tmp_path / "pgdata").exists()  # the live server was used


def test_make_run_falls_back_to_an_embedded_postgres(tmp_path):
    with local_service("postgresql://postgres@127.0.0.1:1/commons_users", tmp_path) as variables:
        result = run_curl(readme_curl_lines()[0], variables)
        assert result.returncode == 0, result.stderr
        assert [item["resource"]["id"] for item in json.loads(result.stdout)["items"]] == ["r-fractions"]
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
