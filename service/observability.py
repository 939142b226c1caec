"""What an operator watches of the API: request ids, HTTP metrics, and the readiness check."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from uuid import uuid4

from aiohttp import web
from aiohttp.typedefs import Handler
import asyncpg
from prometheus_client import Counter, Histogram

from core.observability import request_id

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# The status recorded for a request whose client went away before its answer (as nginx logs it).
CLIENT_CLOSED = 499
# A caller's request id is kept only if it cannot forge log content.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

HTTP_REQUESTS = Counter("commons_users_http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "commons_users_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the caller's X-Request-ID (or make one), log under it, and return it."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    chosen = offered if _VALID_REQUEST_ID.fullmatch(offered) else uuid4().hex
    token = request_id.set(chosen)
    try:
        response = await handler(request)
    finally:
        request_id.reset(token)
    response.headers[REQUEST_ID_HEADER] = chosen
    return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = CLIENT_CLOSED  # the client went away: no answer, and no server error
        raise
    finally:
        HTTP_DURATION.labels(request.method, route).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()


async def database_answers(pool: asyncpg.Pool, within_seconds: float) -> bool:
    try:
        return await pool.fetchval("SELECT true", timeout=within_seconds) is True
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.warning("readiness: the database does not answer (%s)", exc)
        return False
