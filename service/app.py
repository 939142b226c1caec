"""The app factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from functools import partial
from importlib.metadata import version

from aiohttp import web
import asyncpg

from core import db
from core.observability import health_response, metrics_response, observe_pool
from core.replicas import Databases, open_replicas
from core.settings import Settings
from service import auth, docs, observability, ratelimit
from service.access_log import keep_request_bytes_out_of_server_errors
from service.auth import public
from service.cursors import CursorCodec
from service.handlers import resources, sessions, update_stream, updates, users
from service.keys import CURSORS, DATABASES, POOL, SETTINGS
from service.openapi import build_document
from service.problems import problem_middleware
from service.proxies import client_middleware
from service.read_your_writes import written_positions
from service.redis_store import shared_redis
from service.stream_caps import stream_caps
from service.update_stream import HUB, close_streams, update_stream_hub

OPENAPI = web.AppKey("openapi", dict)


async def _database(app: web.Application) -> AsyncIterator[None]:
    """The primary's pool, and the read replicas' pools, checked in the background (README: "Read
    replicas and a connection pooler")."""
    settings = app[SETTINGS]

    def pool(dsn: str, *, min_size: int) -> Awaitable[asyncpg.Pool]:
        return db.create_pool(
            dsn,
            min_size=min_size,
            max_size=settings.db_pool_max_size,
            connect_timeout=settings.db_timeout_seconds,
            statement_timeout=settings.db_timeout_seconds,
            application_name="commons-users-api",
            transaction_pooler=settings.database_transaction_pooler,
        )

    app[POOL] = await pool(settings.database_url.get_secret_value(), min_size=settings.db_pool_min_size)
    # A replica's pool connects when first used, by its first check: one that is down does not stop the API.
    replicas = await open_replicas(
        [url.get_secret_value() for url in settings.database_replica_urls], partial(pool, min_size=0)
    )
    app[DATABASES] = Databases(app[POOL], replicas, max_lag=settings.database_replica_max_lag_seconds)
    checks = asyncio.create_task(app[DATABASES].check_forever(settings.database_replica_check_seconds))
    yield
    checks.cancel()
    for closing in (*[replica.pool for replica in replicas], app[POOL]):
        await closing.close()


@public
async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


@public
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return health_response(True, "serving")


@public
async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers, and the live update hub follows the changes (a new stream
    should go to a replica that can serve it)."""
    settings = request.app[SETTINGS]
    if not await observability.database_answers(request.app[POOL], settings.readiness_timeout_seconds):
        return health_response(False, "database unreachable")
    if not request.app[HUB].listening:
        return health_response(False, "not following the changes for live updates")
    return health_response(True, "database reachable, following the changes")


@public
async def metrics(request: web.Request) -> web.Response:
    observe_pool(request.app[POOL], request.app[SETTINGS].db_pool_max_size)
    return metrics_response()


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/sessions", sessions.create_session)
    router.add_get("/api/sessions/logout", sessions.logout)  # before /api/sessions/{id}
    router.add_post("/api/sessions/logout", sessions.logout)
    router.add_get("/api/sessions/{id}", sessions.get_session)
    router.add_get("/api/users", users.search_users)
    router.add_get("/api/users/{userId}/profile", users.get_profile)
    router.add_get("/api/users/{userId}/imports", resources.list_imports)
    router.add_get("/api/resources", resources.list_resources)
    router.add_get("/api/users/{userId}/updates", updates.list_updates)
    router.add_get("/api/users/{userId}/updates/{resourceId}", updates.get_update)
    router.add_get("/api/users/{userId}/update-stream", update_stream.update_stream)
    router.add_post("/api/users/{userId}/updates/{resourceId}/ignore", updates.ignore_update)
    router.add_get("/api/users/{userId}/favorites", resources.list_favorites)
    router.add_post("/api/users/{userId}/favorites", resources.add_favorite)
    router.add_delete("/api/users/{userId}/favorites/{resourceId}", resources.remove_favorite)
    router.add_get("/api/openapi.json", openapi_document)
    docs.add_routes(router)  # the document in a browser, at /api/docs
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)


def create_app(settings: Settings) -> web.Application:
    keep_request_bytes_out_of_server_errors()
    app = web.Application(
        middlewares=[
            client_middleware,
            observability.request_id_middleware,
            observability.metrics_middleware,
            problem_middleware,
            auth.session_middleware,
            ratelimit.rate_limit_middleware,  # after the session: it counts per user
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[CURSORS] = CursorCodec(settings.cursor_key)
    add_routes(app.router)
    app[OPENAPI] = build_document(app, title="Commons Users API", version=version("commons-users"))
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(shared_redis)
    app.cleanup_ctx.append(written_positions)
    app.cleanup_ctx.append(ratelimit.rate_limiter)
    app.cleanup_ctx.append(stream_caps)
    app.cleanup_ctx.append(update_stream_hub)
    app.on_shutdown.append(close_streams)
    app.on_response_prepare.append(ratelimit.add_headers)
    return app
