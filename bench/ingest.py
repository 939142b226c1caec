"""Ingest: `resource.imported` events from the broker to committed rows, side by side with the
limits of the machine and with the peer a team would otherwise pick.

    .venv/bin/python -m bench.ingest [--quick] [--profile-consumer FILE]

In one run, on a Tansu broker of its own and scratch databases on the local PostgreSQL, it
produces `profile.ingest_events` `resource.imported` events (20,000 users, 20,000 resources, three
courses per teacher; 2 % re-import a key already sent, later and at another version, so that the
latest import must win) to a fresh topic of six partitions, keyed by resourceId as the contract
says, then measures:

(a) `kafka_read`: a bare aiokafka read of the topic, records/s;
(b) `copy`: a COPY of the same rows (the final row of every key) into a fresh table shaped as
    `imports` (its primary key and index), rows/s, the best of three runs (the machine's limit);
(c) `copy_staging_upsert`: COPY of the events' rows into a temporary table, then one
    `INSERT ... ON CONFLICT DO UPDATE` (latest import winning) into such a table, rows/s, the best
    of three runs;
(d) `service`: `commons-users consumer` as a separate process on a migrated database in which the
    20,000 resources exist (at version 2, so half the imports make an available update), from its
    partitions' assignment to every record committed (the sum of its stored offsets), events/s.
    The time from process start (the group join: Tansu holds a join for half the session timeout)
    is reported beside it;
(e) `quix`: the Quix Streams PostgreSQL sink (bench/peers/quix_imports.py) from `.venv-peers`,
    when that venv exists, events/s as it reports them (first record consumed to last commit);
    not in the quick profile, which reports it skipped.

It prints one JSON object: the figures, and the service's rate over each reference's (`ratios`:
`service/copy` and `service/quix` are DESIGN §6's, ≥ 0.25 and ≥ 4). `--profile-consumer FILE`
records the consumer process with py-spy (raw format) while it ingests (`--profile-idle`: its waits
too); `--consumer-env NAME=VALUE` sets the consumer's settings; `--only` runs some measures.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator, Sequence
import contextlib
import json
import os
from pathlib import Path
import secrets
import subprocess
import time
from typing import Any

import asyncpg

from bench.harness import (
    FULL,
    PREFIX,
    QUICK,
    ROOT,
    WORK,
    Profile,
    drop_database,
)
from bench.references import copy_reference, copy_staging_reference, kafka_read
from bench.streams import (
    PARTITIONS,
    Topics,
    applied,
    consumer_process,
    create_topics,
    event_row,
    final_rows,
    import_events,
    migrated_database,
    produce,
    seed_resources,
)
from devtools.tansu import tansu_broker

PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
QUIX_PEER = ROOT / "bench" / "peers" / "quix_imports.py"
# Tansu holds a JoinGroup for half the session timeout: a short one shortens the start-up only.
PEER_CONSUMER_CONFIG = ["session.timeout.ms=6000"]


@contextlib.contextmanager
def py_spy(pid: int, output: Path | None, *, idle: bool = False) -> Iterator[None]:
    """py-spy recording `pid` (raw, folded stacks; 100 samples/s; with `idle`, waits too) for the
    block, when `output` is given."""
    if output is None:
        yield
        return
    command = [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "-p", str(pid), "-f", "raw", "-o", str(output)]
    spy = subprocess.Popen(
        [*command, "-r", "100", *(["--idle"] if idle else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it recorded
        spy.wait(timeout=60)


async def service_ingest(
    database: str,
    bootstrap: str,
    topics: Topics,
    events: int,
    *,
    profile_output: Path | None = None,
    profile_idle: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    """(d) The service's consumer process, from start and from assignment to every record applied."""
    conn = await asyncpg.connect(database)
    try:
        started = time.perf_counter()
        with consumer_process(database, bootstrap, topics, **(env or {})) as proc:
            while not (await applied(conn, topics))[0]:  # until its partitions are assigned
                if proc.poll() is not None:
                    raise RuntimeError(f"the consumer exited with status {proc.returncode}")
                await asyncio.sleep(0.01)
            assigned_at = time.perf_counter()
            with py_spy(proc.pid, profile_output, idle=profile_idle):
                while (await applied(conn, topics))[1] < events:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the consumer exited with status {proc.returncode}")
                    await asyncio.sleep(0.01)
                finished = time.perf_counter()
            rss = _rss_kib(proc.pid)
        imports = await conn.fetchval("SELECT count(*) FROM imports")
        updates = await conn.fetchval("SELECT count(*) FROM available_updates")
    finally:
        await conn.close()
    seconds = finished - assigned_at
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "per_second": round(events / seconds),
        "seconds_from_start": round(finished - started, 3),
        "imports_rows": imports,
        "available_updates_rows": updates,
        "rss_mib": round(rss / 1024, 1),
    }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def quix_ingest(database: str, bootstrap: str, topic: str, expect: int) -> dict[str, Any]:
    """(e) The Quix Streams peer, when its venv exists."""
    if not PEERS_PYTHON.exists():
        return {"skipped": f"{PEERS_PYTHON.relative_to(ROOT)} is missing (bench/peers/README.md builds it)"}
    command = [
        str(PEERS_PYTHON),
        str(QUIX_PEER),
        "--broker",
        bootstrap,
        "--topic",
        topic,
        "--database-url",
        database,
        "--table",
        "peer_imports",
        "--expect",
        str(expect),
        "--consumer-config",
        *PEER_CONSUMER_CONFIG,
    ]
    peer = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await peer.communicate()
    lines = stdout.decode().strip().splitlines()
    if peer.returncode != 0 or not lines:
        return {"skipped": f"the peer failed ({peer.returncode}): {stderr.decode(errors='replace')[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["per_second"] = result.get("events_per_second", 0.0)
    return result


# The run -------------------------------------------------------------------------------------------


MEASURES = ("kafka_read", "copy", "copy_staging_upsert", "service", "quix")


async def run(
    profile: Profile,
    *,
    profile_consumer: Path | None = None,
    profile_idle: bool = False,
    only: Sequence[str] = MEASURES,
    consumer_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    WORK.mkdir(exist_ok=True)
    events = import_events(profile.ingest_events)
    rows = final_rows(events)
    name = f"{PREFIX}_ingest_{secrets.token_hex(3)}"
    database = await migrated_database(name)
    try:
        await seed_resources(database)
        with tansu_broker() as bootstrap:
            topics = Topics.fresh("bench-ingest")
            await create_topics(bootstrap, topics.resource)
            produce_seconds = await produce(bootstrap, topics.resource, events)
            results: dict[str, Any] = {
                "profile": profile.name,
                "events": len(events),
                "distinct_rows": len(rows),
                "partitions": PARTITIONS,
                "produce_seconds": round(produce_seconds, 3),
            }
            if "kafka_read" in only:
                results["kafka_read"] = await kafka_read(bootstrap, topics.resource, len(events))
            if "copy" in only:
                results["copy"] = await copy_reference(database, rows)
            if "copy_staging_upsert" in only:
                results["copy_staging_upsert"] = await copy_staging_reference(database, [event_row(e) for e in events])
            if "service" in only:
                results["service"] = await service_ingest(
                    database,
                    bootstrap,
                    topics,
                    len(events),
                    profile_output=profile_consumer,
                    profile_idle=profile_idle,
                    env=consumer_env,
                )
            if "quix" in only and not profile.side_by_side:
                results["quix"] = {"skipped": "quick run: the peers are measured by `make bench`"}
            elif "quix" in only:
                results["quix"] = await quix_ingest(database, bootstrap, topics.resource, len(rows))
    finally:
        await drop_database(name)
    results["ratios"] = ratios(results)
    return results


def ratios(results: dict[str, Any]) -> dict[str, float]:
    service = results.get("service", {}).get("per_second")
    if not service:
        return {}
    found = {}
    for reference in ("copy", "copy_staging_upsert", "kafka_read", "quix"):
        per_second = results.get(reference, {}).get("per_second")
        if per_second:
            found[f"service/{reference}"] = round(service / per_second, 3)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick profile (seconds)")
    parser.add_argument("--events", type=int, help="override the profile's number of events")
    parser.add_argument("--profile-consumer", type=Path, help="py-spy raw output of the consumer while it ingests")
    parser.add_argument("--profile-idle", action="store_true", help="py-spy records waits too (--idle)")
    parser.add_argument("--only", nargs="+", choices=MEASURES, default=MEASURES, help="measure only these")
    parser.add_argument(
        "--consumer-env", nargs="*", default=[], metavar="NAME=VALUE", help="settings of the consumer process"
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.events:
        from dataclasses import replace

        profile = replace(profile, ingest_events=args.events)
    consumer_env = dict(pair.split("=", 1) for pair in args.consumer_env)
    results = asyncio.run(
        run(
            profile,
            profile_consumer=args.profile_consumer,
            profile_idle=args.profile_idle,
            only=args.only,
            consumer_env=consumer_env,
        )
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
