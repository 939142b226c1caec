"""The benchmark's peer for ingesting `resource.imported` events: Quix Streams and its PostgreSQL sink.

What a team would write from the Quix Streams documentation: an Application reading the topic's
JSON values, a StreamingDataFrame that keeps the `resource.imported` events and maps their
camelCase fields to the table's columns, and the community PostgreSQLSink upserting the rows on the
table's primary key (user_id, resource_id, course_id), the latest record of a key winning. The sink
batches the rows of a checkpoint (Quix's default commit interval, 5 s) into one `INSERT ... ON
CONFLICT DO UPDATE` (psycopg2's execute_values) in one transaction, then Quix commits the offsets.

    .venv-peers/bin/python bench/peers/quix_imports.py --broker 127.0.0.1:9092 \\
        --topic commons.import-events --database-url postgresql://postgres@127.0.0.1:5432/db \\
        --table peer_imports --expect 50000

It creates the table if it is missing, runs until the table holds `--expect` rows (a background
thread counts them, then calls `app.stop()`, which commits the last checkpoint) or until the topic
has been drained (no record for `--idle-seconds`), and prints one line of JSON on stdout:
`{"events": ..., "seconds": ..., "events_per_second": ..., "rows": ...}`, timed from the first
record consumed to the end of the last database commit. Exits 0 when the table holds `--expect`
rows, 1 otherwise. Each run joins a new consumer group, reading from the earliest offset.

Kafka client settings that a broker needs (Tansu: see README.md here) go in `--consumer-config` and
`--producer-config` as KEY=VALUE pairs, passed to confluent-kafka as they are.
"""

# The peer's libraries (Quix Streams, psycopg2) are in .venv-peers, not in the .venv mypy runs from:
# their names are Any here, and so is the sink subclassed from them.
# mypy: disable-error-code="import-not-found, import-untyped"
# mypy: allow-subclassing-any

from __future__ import annotations

import argparse
from datetime import datetime
import json
import shutil
import sys
import tempfile
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit
import uuid

import psycopg2
from psycopg2 import sql
from quixstreams import Application
from quixstreams.sinks import SinkBatch
from quixstreams.sinks.community.postgresql import PostgreSQLSink

PRIMARY_KEY = ["user_id", "resource_id", "course_id"]
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    user_id        text,
    resource_id    text,
    course_id      text,
    course_name    text,
    version_id     text,
    version_number integer,
    imported_at    timestamptz,
    PRIMARY KEY (user_id, resource_id, course_id)
)
"""


def connection_settings(database_url: str) -> dict[str, Any]:
    """psycopg2/PostgreSQLSink keyword arguments from a postgresql:// URL."""
    url = urlsplit(database_url)
    return {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "dbname": unquote(url.path.lstrip("/")) or "postgres",
        "user": unquote(url.username or "postgres"),
        "password": unquote(url.password) if url.password is not None else None,
    }


def to_row(event: dict[str, Any]) -> dict[str, Any]:
    """A `resource.imported` event (README.md "Events") as a row of the table."""
    return {
        "user_id": event["userId"],
        "resource_id": event["resourceId"],
        "course_id": event["courseId"],
        "course_name": event["courseName"],
        "version_id": event["versionId"],
        "version_number": event["versionNumber"],
        "imported_at": datetime.fromisoformat(event["importedAt"]),
    }


class Progress:
    """What the run measures; written by the processing thread, read by the watcher."""

    def __init__(self) -> None:
        self.events = 0
        self.first_consumed: float | None = None
        self.last_committed: float | None = None
        self.last_consumed = time.monotonic()

    def consumed(self, value: Any) -> Any:
        now = time.monotonic()
        if self.first_consumed is None:
            self.first_consumed = now
        self.last_consumed = now
        self.events += 1
        return value


class TimedPostgreSQLSink(PostgreSQLSink):
    """The stock sink; only notes when each batch's transaction has committed."""

    def __init__(self, progress: Progress, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._progress = progress

    def write(self, batch: SinkBatch) -> None:
        super().write(batch)
        if not batch.empty():
            self._progress.last_committed = time.monotonic()


def parse_config(pairs: list[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"quix_imports: expected KEY=VALUE, got {pair!r}")
        config[key] = value
    return config


def count_rows(settings: dict[str, Any], table: str) -> int:
    with psycopg2.connect(**settings) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        (count,) = cursor.fetchone()
    conn.close()
    return int(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True, help="bootstrap servers, HOST:PORT")
    parser.add_argument("--topic", default="commons.import-events")
    parser.add_argument("--database-url", required=True, help="postgresql://USER[:PASSWORD]@HOST[:PORT]/DB")
    parser.add_argument("--table", default="peer_imports")
    parser.add_argument("--expect", type=int, required=True, help="stop once the table holds this many rows")
    parser.add_argument("--idle-seconds", type=float, default=15.0, help="stop after this long without a record")
    parser.add_argument("--commit-interval", type=float, default=5.0, help="Quix's checkpoint interval (default 5)")
    parser.add_argument("--consumer-config", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--producer-config", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    settings = connection_settings(args.database_url)
    with psycopg2.connect(**settings) as conn, conn.cursor() as cursor:
        cursor.execute(sql.SQL(CREATE_TABLE).format(table=sql.Identifier(args.table)))
    conn.close()

    progress = Progress()
    state_dir = tempfile.mkdtemp(prefix="quix-peer-state-")
    app = Application(
        broker_address=args.broker,
        consumer_group=f"peer-imports-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        consumer_extra_config=parse_config(args.consumer_config),
        producer_extra_config=parse_config(args.producer_config),
        state_dir=state_dir,
        loglevel="WARNING",
    )
    sink = TimedPostgreSQLSink(
        progress,
        **settings,
        table_name=args.table,
        schema_auto_update=False,  # the table above is the schema
        primary_key_columns=PRIMARY_KEY,
        upsert_on_primary_key=True,
        include_metadata=False,  # no __key and timestamp columns
    )
    sdf = app.dataframe(app.topic(args.topic, value_deserializer="json"))
    sdf = sdf.update(progress.consumed)
    sdf = sdf[sdf["type"] == "resource.imported"]
    sdf = sdf.apply(to_row)
    sdf.sink(sink)

    done = threading.Event()
    outcome = {"rows": 0}

    def watch() -> None:
        # The table is the truth: stop once it holds what was expected. A stopped Application
        # commits its last checkpoint; app.run(timeout=...) below stops it on an idle topic.
        while not done.wait(0.25):
            if progress.last_committed is None:
                continue
            outcome["rows"] = count_rows(settings, args.table)
            if outcome["rows"] >= args.expect:
                app.stop()
                return

    watcher = threading.Thread(target=watch, name="row-count", daemon=True)
    watcher.start()
    try:
        app.run(timeout=args.idle_seconds, collect=False)
    finally:
        done.set()
        watcher.join()
        shutil.rmtree(state_dir, ignore_errors=True)

    rows = count_rows(settings, args.table)
    start, end = progress.first_consumed, progress.last_committed
    seconds = (end - start) if start is not None and end is not None else 0.0
    result = {
        "events": progress.events,
        "seconds": round(seconds, 3),
        "events_per_second": round(progress.events / seconds, 1) if seconds > 0 else 0.0,
        "rows": rows,
    }
    print(json.dumps(result), flush=True)
    return 0 if rows >= args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
