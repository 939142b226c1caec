"""Imported resources (and their deprecated listing) and favorites."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
import asyncpg

from core import favorites, imports
from core.errors import FieldError, InvalidInput, NotFound
from service.auth import session_checked_in_statement
from service.http import decode_cursor, document_page, fetch_for_session, own_session, parse_body, parse_query, path_id
from service.keys import POOL
from service.models import FavoriteRequest, PageQuery, ResourcePage, ResourcesQuery
from service.openapi import PathParameter, operation
from service.read_your_writes import wrote

USER_ID = PathParameter("userId", "The session's own user id.")
RESOURCE_ID = PathParameter("resourceId", "A resource id.")

IMPORTS_SUCCESSOR = "/api/resources?onlyImported=true"
# RFC 9745: the date from which the imports listing is deprecated.
IMPORTS_DEPRECATED_AT = "@1704067200"  # 2024-01-01T00:00:00Z


def resource_page(
    request: web.Request, rows: list[asyncpg.Record], size: int, kind: str, *, status: int = 200
) -> web.Response:
    return document_page(request, rows, size, kind, "sort_key", "id", status=status)


async def _imported_page(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(request, query.cursor, "imports", datetime, str)
    rows = await fetch_for_session(request, imports.PAGE_SQL, *(after or (None, None)), query.size + 1)
    return resource_page(request, rows, query.size, "imports")


@operation(
    summary="List the resources the user imported (deprecated)",
    description="Newest import first. Superseded by `GET /api/resources?onlyImported=true`.",
    tag="resources",
    path=(USER_ID,),
    query=PageQuery,
    responses={200: ResourcePage},
    errors=(403,),
    deprecated=True,
    response_headers={
        "Deprecation": "When the listing was deprecated (RFC 9745).",
        "Link": 'The successor listing, `rel="successor-version"`.',
    },
)
@session_checked_in_statement
async def list_imports(request: web.Request) -> web.Response:
    response = await _imported_page(request, parse_query(request, PageQuery))
    response.headers["Deprecation"] = IMPORTS_DEPRECATED_AT
    response.headers["Link"] = f'<{IMPORTS_SUCCESSOR}>; rel="successor-version"'
    return response


@operation(
    summary="List the resources the session user imported",
    description="Newest import first. `onlyImported=true` is required: it is the only listing offered.",
    tag="resources",
    query=ResourcesQuery,
    responses={200: ResourcePage},
)
@session_checked_in_statement
async def list_resources(request: web.Request) -> web.Response:
    query = parse_query(request, ResourcesQuery)
    if not query.only_imported:
        message = "Only onlyImported=true is supported."
        raise InvalidInput(message, [FieldError(field="onlyImported", location="query", message=message)])
    return await _imported_page(request, query)


@operation(
    summary="List the user's favorite resources",
    description="Most recently marked first.",
    tag="favorites",
    path=(USER_ID,),
    query=PageQuery,
    responses={200: ResourcePage},
    errors=(403,),
)
@session_checked_in_statement
async def list_favorites(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    after = decode_cursor(request, query.cursor, "favorites", datetime, str)
    rows = await fetch_for_session(request, favorites.PAGE_SQL, *(after or (None, None)), query.size + 1)
    return resource_page(request, rows, query.size, "favorites")


@operation(
    summary="Mark a resource as a favorite",
    description="Idempotent. Answers with all of the user's favorites, most recent first.",
    tag="favorites",
    path=(USER_ID,),
    body=FavoriteRequest,
    responses={201: ResourcePage},
    errors=(403, 404),
)
async def add_favorite(request: web.Request) -> web.Response:
    session = own_session(request)
    body = await parse_body(request, FavoriteRequest)
    assert body is not None
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if not await favorites.add_favorite(conn, session.user_id, body.resource_id):
            raise NotFound(
                f"No resource {body.resource_id!r}.",
                [FieldError(field="resourceId", location="body", message="unknown resource")],
            )
        rows = await favorites.all_favorites(conn, session.user_id)
    await wrote(request, session.user_id)
    return resource_page(request, rows, len(rows), "favorites", status=201)


@operation(
    summary="Unmark a favorite",
    description="Idempotent.",
    tag="favorites",
    path=(USER_ID, RESOURCE_ID),
    responses={204: None},
    errors=(403,),
)
async def remove_favorite(request: web.Request) -> web.Response:
    session = own_session(request)
    await favorites.remove_favorite(request.app[POOL], session.user_id, path_id(request, "resourceId"))
    await wrote(request, session.user_id)
    return web.Response(status=204)
