"""What an operator watches, for every role: JSON logs carrying the request id, the database pool
gauge, and the shape of health and metrics answers."""

from __future__ import annotations

import contextvars
import gc
import logging
import sys
from typing import Literal

from aiohttp import web
import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from pythonjsonlogger.json import JsonFormatter

# Set by the API for the request in hand (service/observability.py); None elsewhere.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


def configure_logging(level: str, style: Literal["json", "console"]) -> None:
    """JSON lines on stdout (one object per line, with the request id), or readable lines for a
    terminal."""
    handler = logging.StreamHandler(sys.stdout)
    if style == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


DB_POOL = Gauge("commons_users_db_pool_connections", "Database pool connections, by state.", ["state"])


def observe_pool(pool: asyncpg.Pool, max_size: int) -> None:
    size, idle = pool.get_size(), pool.get_idle_size()
    DB_POOL.labels("in_use").set(size - idle)
    DB_POOL.labels("idle").set(idle)
    DB_POOL.labels("max").set(max_size)


def metrics_response() -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def health_response(healthy: bool, detail: str) -> web.Response:
    return web.json_response(
        {"status": "ok" if healthy else "unavailable", "detail": detail}, status=200 if healthy else 503
    )


# The cyclic garbage collector's thresholds once started (Python's are 700, 10, 10). The consumer's
# batches in flight are many objects that outlive a young collection, so with the default
# thresholds the collector went through them again and again: 35 % of the consumer's time
# (bench/ingest.py). An API replica holding thousands of live update streams keeps their objects
# for as long as they are open: with the default thresholds, handing out a large change paused it
# for about 0.7 s in a collection of every generation (bench/update_stream.py). Objects freed by
# reference counting (nearly all) are freed at once whatever these say; the thresholds only decide
# how much cyclic garbage may wait to be collected.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_garbage_collector() -> None:
    """Leave what start-up made (modules, schemas: most of the process's objects) out of every
    collection from now on, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
