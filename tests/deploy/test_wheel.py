"""The wheel, built as the Dockerfile builds it: it holds the package and its migrations and
nothing of devtools/ or tests/, and installed into a fresh virtualenv it migrates an empty database."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
import subprocess
import sys
import zipfile

import asyncpg
import pytest

from core import db
from tests.factories import JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]


def _build(out: Path) -> tuple[Path, str]:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("commons_users-*.whl")
    return found, built.stdout + built.stderr


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, and what its build printed (verbose: setuptools' warnings included). pip builds in
    the tree (build/, *.egg-info): under pytest-xdist (`make test`), the first worker that needs it
    builds it for the run while the others wait, then they take it."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _build(tmp_path_factory.mktemp("wheel"))
    shared = tmp_path_factory.getbasetemp().parent  # the run's, above each worker's
    with (shared / "wheel.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        out, log = shared / "wheel", shared / "wheel.log"
        if not log.exists():
            out.mkdir(exist_ok=True)
            found, output = _build(out)
            log.write_text(output)
        (found,) = out.glob("commons_users-*.whl")
        return found, log.read_text()


@pytest.fixture(scope="module")
def wheel(build: tuple[Path, str]) -> Path:
    return build[0]


def test_the_build_warns_of_nothing(build: tuple[Path, str]) -> None:
    output = build[1]
    assert "Warning:" not in output, output  # setuptools' own, e.g. a package left out of the configuration


def test_the_wheel_holds_the_package_and_its_migrations_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"core", "service", "consumers", "sql"}
    with db.migrations_dir() as migrations:
        sql_files = {f"sql/migrations/{path.name}" for path in migrations.glob("*.sql")}
    assert sql_files and sql_files <= set(names)


def test_an_installed_wheel_migrates_an_empty_database(wheel: Path, empty_database: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", wheel],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    # Away from the checkout, so that only the installed package can be imported.
    migrated = subprocess.run(
        [venv / "bin" / "commons-users", "migrate"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": empty_database, "JWT_SECRET": JWT_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    async def tables() -> set[str]:
        conn = await asyncpg.connect(empty_database)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {row["tablename"] for row in rows}
        finally:
            await conn.close()

    assert {"users", "resources", "imports", "available_updates", "consumer_offsets"} <= asyncio.run(tables())
