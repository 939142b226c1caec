"""What the rate limit costs the read path: GET /api/users/{id}/updates loaded at a fixed
concurrency on three API processes side by side, the limit off, counted in the process, and
counted in Redis. See bench/README.md.

    .venv/bin/python bench/ratelimit.py | tee bench/results/ratelimit.txt
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Iterator
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
import os
from pathlib import Path
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any
from uuid import uuid4

import aiohttp
import asyncpg
from redis.asyncio import Redis
from yarl import URL

from core import db, ingest, sessions  # the package is installed in .venv (make)
from core.events import EVENT_ADAPTER
from service import ratelimit, redis_store

USER = "u-bench"
JWT_SECRET = "bench-jwt-secret-" + "x" * 32
NEVER_REACHED = 1_000_000_000  # counted, never refused: the cost of counting, not of refusing
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Mode:
    name: str
    env: dict[str, str]
    latencies: list[float] = field(default_factory=list)  # seconds, every round
    seconds: float = 0.0
    failures: int = 0  # answers other than 200
    uncounted: int = 0  # limited answers served uncounted (the store failed)
    round_rates: list[float] = field(default_factory=list)  # requests per second of each round

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def ms(self, percent: int) -> float:
        """A percentile of the latencies, in milliseconds."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[percent - 1] * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def events(resources: int) -> Iterator[dict[str, Any]]:
    """Per resource: version 1, imported by the user into a course, then version 2, which makes an
    available update."""
    for n in range(resources):
        rid = f"r-bench-{n}"
        for version in (1, 2):
            at = (T0 + timedelta(days=version)).isoformat()
            common = {"eventId": str(uuid4()), "occurredAt": at, "schemaVersion": 1, "resourceId": rid}
            resource = {
                "title": f"Resource {n}",
                "description": "A resource of the benchmark.",
                "type": "assignment",
                "account": {"id": "acct-bench", "name": "Bench Academy"},
                "authors": [{"id": "author-1", "name": "An Author"}],
                "tags": ["math", "bench"],
                "createDate": T0.isoformat(),
                "updateDate": at,
            }
            yield common | {
                "type": "resource.version.published",
                "versionId": f"{rid}-v{version}",
                "versionNumber": version,
                "versionNotes": f"Version {version}",
                "publishedAt": at,
                "resource": resource,
            }
            if version == 1:
                yield common | {
                    "eventId": str(uuid4()),
                    "type": "resource.imported",
                    "userId": USER,
                    "courseId": "c-bench",
                    "courseName": "Bench course",
                    "versionId": f"{rid}-v1",
                    "versionNumber": 1,
                    "importedAt": at,
                }


async def seed(database_url: str, resources: int) -> str:
    """The user, their available updates, and a session; returns the session id."""
    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    try:
        claims = sessions.IdentityClaims.model_validate(
            {"sub": USER, "accountId": "a-bench", "accountName": "Bench", "name": "Teacher", "email": "t@example.edu"}
            | {"exp": int(time.time()) + 86400}
        )
        session_id, _ = await sessions.create_session(pool, claims, 86400)
        async with pool.acquire() as conn, conn.transaction():
            await ingest.apply_events(conn, [EVENT_ADAPTER.validate_python(e) for e in events(resources)])
        return session_id
    finally:
        await pool.close()


async def count_cost(redis_url: str, prefix: str, calls: int) -> dict[str, float]:
    """Microseconds per count, sequential calls in this process: the counters' own cost, free of
    the noise of a loaded machine."""
    redis = redis_store.redis_client(redis_url, 1.0)
    counters: dict[str, ratelimit.WindowCounter] = {
        "in-process": ratelimit.LocalCounter(3600),
        "redis": ratelimit.RedisCounter(redis, 3600, 1.0),
    }
    costs = {}
    for name, counter in counters.items():
        started = time.perf_counter()
        for n in range(calls):
            assert await counter.hit(f"{prefix}cost:{n % 100}") is not None, "the store failed"
        costs[name] = (time.perf_counter() - started) / calls * 1e6
    await redis.aclose()
    return costs


@contextlib.asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    name = f"commons_users_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = str(URL(server_url).with_path(f"/{name}"))
            db.migrate(url)
            yield url
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.contextmanager
def api_process(database_url: str, port: int, env: dict[str, str]) -> Iterator[None]:
    # Only the mode's own rate limit settings: none inherited from this shell.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RATE_LIMIT_", "REDIS_"))}
    environment = {
        **inherited,
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "WARNING",  # no access log: the bench measures the request path, not logging
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=environment,
        cwd=Path(__file__).parent,  # no .env file there to add settings
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_ready(http: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise SystemExit(f"the API at {base} did not become ready")


async def load(mode: Mode, url: str, session_id: str, concurrency: int, seconds: float) -> None:
    """Requests from `concurrency` workers for `seconds`, recorded in `mode`."""
    headers = {"X-Session-ID": session_id}
    limited = mode.env["RATE_LIMIT_PER_HOUR"] != "0"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started, answered = time.perf_counter(), len(mode.latencies)
        deadline = started + seconds

        async def worker() -> None:
            while (sent := time.perf_counter()) < deadline:
                async with http.get(url, headers=headers) as response:
                    await response.read()
                    mode.latencies.append(time.perf_counter() - sent)
                    mode.failures += response.status != 200
                    # A limited answer without RateLimit was served uncounted: the store failed.
                    mode.uncounted += limited and "RateLimit" not in response.headers
                    assert limited or "RateLimit-Policy" not in response.headers, "the limit is not off"

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        mode.seconds += elapsed
        mode.round_rates.append((len(mode.latencies) - answered) / elapsed)


async def run(args: argparse.Namespace) -> None:
    prefix = f"bench-rate-limit-{secrets.token_hex(4)}:"
    modes = [
        Mode("off", {"RATE_LIMIT_PER_HOUR": "0"}),
        Mode("in-process", {"RATE_LIMIT_PER_HOUR": str(NEVER_REACHED)}),
        Mode(
            "redis",
            {"RATE_LIMIT_PER_HOUR": str(NEVER_REACHED), "REDIS_URL": args.redis_url, "RATE_LIMIT_KEY_PREFIX": prefix},
        ),
    ]
    redis = Redis.from_url(args.redis_url)
    redis_version = (await redis.info("server"))["redis_version"]
    async with scratch_database(args.database_server) as database_url:
        session_id = await seed(database_url, args.updates)
        ports = [free_port() for _ in modes]
        with contextlib.ExitStack() as stack:
            for mode, port in zip(modes, ports, strict=True):
                stack.enter_context(api_process(database_url, port, mode.env))
            async with aiohttp.ClientSession() as http:
                for port in ports:
                    await wait_ready(http, f"http://127.0.0.1:{port}")
            urls = [f"http://127.0.0.1:{port}/api/users/{USER}/updates" for port in ports]
            for mode, url in zip(modes, urls, strict=True):  # warm up: connections, pools, prepared statements
                await load(Mode(mode.name, mode.env), url, session_id, args.concurrency, 1.0)
            for _ in range(args.rounds):  # interleaved, so that drift in the machine's load hits every mode alike
                for mode, url in zip(modes, urls, strict=True):
                    await load(mode, url, session_id, args.concurrency, args.seconds)
    costs = await count_cost(args.redis_url, prefix, 5000)
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    await redis.aclose()
    report(args, modes, redis_version, costs)


def report(args: argparse.Namespace, modes: list[Mode], redis_version: str, costs: dict[str, float]) -> None:
    print(f"bench/ratelimit.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"GET /api/users/{{id}}/updates ({args.updates} updates a page), {args.concurrency} concurrent clients, "
        f"{args.rounds} rounds of {args.seconds:g} s per mode, interleaved"
    )
    print(
        f"one API process per mode (access log off); the client on the same machine; "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL local, Redis {redis_version} local"
    )
    print()
    print(f"{'mode':<12}{'requests':>10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}{'uncounted':>11}")
    for mode in modes:
        print(
            f"{mode.name:<12}{len(mode.latencies):>10}{mode.rate:>10.0f}"
            f"{mode.ms(50):>10.2f}{mode.ms(99):>10.2f}{mode.failures:>8}{mode.uncounted:>11}"
        )
    print()
    print("req/s of each round, in the order run (the spread is the machine's noise):")
    for mode in modes:
        print(f"{mode.name:<12}" + " ".join(f"{rate:>5.0f}" for rate in mode.round_rates))
    off = modes[0]
    print()
    for mode in modes[1:]:
        print(
            f"{mode.name} / off: req/s x{mode.rate / off.rate:.3f}, "
            f"p50 x{mode.ms(50) / off.ms(50):.3f}, p99 x{mode.ms(99) / off.ms(99):.3f}"
        )
    print()
    print("one count alone, 5000 calls in a row from this process (no HTTP, no load):")
    print(", ".join(f"{name} {micros:.1f} µs" for name, micros in costs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--updates", type=int, default=20, help="available updates of the user (one page)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
