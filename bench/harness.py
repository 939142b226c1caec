"""What every benchmark needs: scratch databases, the processes under test, the load generators
(wrk, pgbench) as separate processes on loopback, and the facts of the machine."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Iterator, Mapping
import contextlib
from dataclasses import dataclass
import json
import os
from pathlib import Path
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
import urllib.error
import urllib.request

import asyncpg
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
# Scratch space of the benchmarks (git-ignored): the baseline's tree and venv, data files.
WORK = ROOT / ".bench"
JWT_SECRET = "bench-jwt-secret-" + "x" * 32
SERVER_URL = os.environ.get("BENCH_DATABASE_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = os.environ.get("BENCH_DATABASE_PREFIX", "bench")  # of every database's name; each test run has its own


@dataclass(frozen=True)
class Profile:
    """How big and how long: `full` for bench/RESULTS.md, `quick` for the tests (does each run?)."""

    name: str
    users: int  # users with available updates (read path)
    updates_per_user: int
    seconds: float  # of each load
    connections: int
    search_users: int  # users of the searched account
    ingest_events: int
    fanout_importers: int
    freshness_events: int
    memory_events: int
    memory_seconds: float
    idle_streams: int  # live update streams held by one API process
    side_by_side: bool = True  # the baseline release and the peers (.venv-peers) too; not in the quick profile


FULL = Profile(
    "full",
    users=20_000,
    updates_per_user=100,
    seconds=20,
    connections=32,
    search_users=1_000_000,
    ingest_events=200_000,
    fanout_importers=100_000,
    freshness_events=20,
    memory_events=1_000_000,
    memory_seconds=600,
    idle_streams=10_000,
)
QUICK = Profile(
    "quick",
    users=200,
    updates_per_user=30,
    seconds=1,
    connections=4,
    search_users=5_000,
    ingest_events=2_000,
    fanout_importers=1_000,
    freshness_events=3,
    memory_events=5_000,
    memory_seconds=3,
    idle_streams=200,
    side_by_side=False,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def database_url(name: str) -> str:
    return str(URL(SERVER_URL).with_path(f"/{name}"))


async def _admin(query: str, *args: object) -> Any:
    """One statement on the server's maintenance database."""
    admin = await asyncpg.connect(SERVER_URL)
    try:
        return await admin.fetchval(query, *args)
    finally:
        await admin.close()


async def create_database(name: str, *, template: str | None = None) -> str:
    """A new database (dropped first if it exists), empty or a copy of `template`."""
    await drop_database(name)
    await _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return database_url(name)


async def drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def database_exists(name: str) -> bool:
    return bool(await _admin("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name))


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (WORK / "last.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{process.args!r} exited with status {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered at {url} within {timeout} s")


@contextlib.contextmanager
def process(
    command: list[str], env: Mapping[str, str], *, ready_url: str | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process for the duration of the block, stopped with SIGTERM; its output goes to
    .bench/last.log (the last lines are shown if it fails to start)."""
    WORK.mkdir(exist_ok=True)
    log = (WORK / "last.log").open("ab")
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=cwd or WORK,  # no .env file there to add settings
        stdout=log,
        stderr=log,
    )
    try:
        if ready_url:
            _wait_http(ready_url, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def service_env(database: str, **extra: str) -> dict[str, str]:
    """The service's settings in the benchmarks: its production defaults, but a rate limit that a
    benchmark never reaches (counted in the process: bench/results/ratelimit.txt has its cost)."""
    return {
        "DATABASE_URL": database,
        "JWT_SECRET": JWT_SECRET,
        "RATE_LIMIT_PER_HOUR": "1000000000",
        **extra,
    }


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def api_server(python: Path, database: str, *, cwd: Path | None = None, **extra: str) -> Iterator[Server]:
    """`commons-users api` from the given interpreter (this tree's or the baseline's)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(python), "-m", "service", "api", "--host", "127.0.0.1", "--port", str(port)]
    with process(command, service_env(database, **extra), ready_url=f"{base}/readyz", cwd=cwd) as proc:
        yield Server(base, proc.pid)


@contextlib.contextmanager
def service_api(python: Path, database: str, *, cwd: Path | None = None, **extra: str) -> Iterator[str]:
    """As api_server; yields the base URL."""
    with api_server(python, database, cwd=cwd, **extra) as server:
        yield server.url


# Load generators ---------------------------------------------------------------------------------

_WRK_SCRIPT = """
-- A random (user, session) pair of the file args[1] for every request; args[2] is the path with
-- %s for the user id.
local users = {}
function init(args)
  for line in io.lines(args[1]) do
    local user, session = line:match("(%S+) (%S+)")
    users[#users + 1] = {user, session}
  end
  path = args[2]
  math.randomseed(os.time() * 1000 + os.clock() * 1000000)
end
function request()
  local pair = users[math.random(#users)]
  return wrk.format("GET", string.format(path, pair[1]), {["X-Session-ID"] = pair[2]})
end
"""


@dataclass(frozen=True)
class Load:
    """What one load generator run measured."""

    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # answers other than 2xx, and socket errors

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "errors": self.errors,
        }


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> Load:
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    per_second = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        errors += sum(int(n) for n in match.groups())
    return Load(requests, per_second, p50, p99, errors)


def wrk(base: str, path: str, sessions_file: Path, *, connections: int, seconds: float) -> Load:
    """`wrk` against `base` + `path` (with %s for a random user's id, whose session it sends)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=WORK) as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        command = [
            "wrk",
            "--threads",
            "2",
            "--connections",
            str(connections),
            "--duration",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "--latency",
            "--script",
            script.name,
            base,
            "--",
            str(sessions_file),
            path,
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return parse_wrk(output)


def require_tools() -> None:
    if missing := [tool for tool in ("wrk", "pgbench") if shutil.which(tool) is None]:
        sys.exit(f"bench: missing {', '.join(missing)} (Debian's wrk and postgresql-client; make bench installs them)")


def main(run: Callable[[Profile], Coroutine[Any, Any, dict[str, Any]]], description: str | None) -> None:
    """`python -m bench.<name> [--quick]`: one benchmark, its figures printed as JSON."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the seconds-long profile")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(QUICK if args.quick else FULL)), indent=2, default=str))
