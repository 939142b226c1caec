"""What an operator watches: structured logs with request ids, Prometheus metrics, health probes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import contextvars
import logging
import re
import sys
import time
from typing import Literal
from uuid import uuid4

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from pythonjsonlogger.json import JsonFormatter

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# A caller's request id is kept only if it cannot forge log content.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# Logs ------------------------------------------------------------------------------------------


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def configure_logging(level: str, style: Literal["json", "console"]) -> None:
    """JSON lines on stdout (one object per line, with the request id), or readable lines for a
    terminal."""
    handler = logging.StreamHandler(sys.stdout)
    if style == "json":
        handler.setFormatter(JsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@web.middleware
async def request_id_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
    """Take the caller's X-Request-ID (or make one), log under it, and return it."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = offered if _VALID_REQUEST_ID.fullmatch(offered) else uuid4().hex
    token = _request_id.set(request_id)
    try:
        response = await handler(request)
    finally:
        _request_id.reset(token)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


# Metrics ---------------------------------------------------------------------------------------

HTTP_REQUESTS = Counter("commons_users_http_requests_total", "HTTP requests answered.",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("commons_users_http_request_duration_seconds", "Time to answer an HTTP request.",
                          ["method", "route"], buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
DB_POOL = Gauge("commons_users_db_pool_connections", "Database pool connections, by state.", ["state"])

EVENTS_APPLIED = Counter("commons_users_consumer_events_applied_total", "Events applied, by type.", ["type"])
EVENTS_SKIPPED = Counter("commons_users_consumer_events_skipped_total", "Events of unknown types skipped.",
                         ["type"])
DEAD_LETTERED = Counter("commons_users_consumer_dead_lettered_total", "Messages sent to a dead-letter topic.",
                        ["topic"])
FENCED_BATCHES = Counter("commons_users_consumer_fenced_batches_total",
                         "Batches refused because the partition changed hands.")
FANNED_OUT_ROWS = Counter("commons_users_consumer_fanned_out_rows_total",
                          "Available-update rows written or removed by events.")
BATCH_DURATION = Histogram("commons_users_consumer_batch_duration_seconds",
                           "Time to apply and commit one partition's batch.",
                           buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
PARTITION_LAG = Gauge("commons_users_consumer_partition_lag", "Records not yet applied, by partition.",
                      ["topic", "partition"])


@web.middleware
async def metrics_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                             ) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        HTTP_DURATION.labels(request.method, route).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()


def observe_pool(pool: asyncpg.Pool, max_size: int) -> None:
    size, idle = pool.get_size(), pool.get_idle_size()
    DB_POOL.labels("in_use").set(size - idle)
    DB_POOL.labels("idle").set(idle)
    DB_POOL.labels("max").set(max_size)


def metrics_response() -> web.Response:
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


# Health ----------------------------------------------------------------------------------------


def health_response(healthy: bool, detail: str) -> web.Response:
    return web.json_response({"status": "ok" if healthy else "unavailable", "detail": detail},
                             status=200 if healthy else 503)


async def database_answers(pool: asyncpg.Pool, timeout: float) -> bool:
    try:
        return await pool.fetchval("SELECT true", timeout=timeout) is True
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.warning("readiness: the database does not answer (%s)", exc)
        return False
