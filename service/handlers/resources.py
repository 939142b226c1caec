"""Imported resources (and their deprecated listing) and favorites."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
import asyncpg

from core import favorites, imports
from core.errors import FieldError, InvalidInput, NotFound
from service.http import decode_cursor, json_response, own_session, page_meta, parse_body, parse_query, path_id
from service.keys import POOL, SESSION
from service.models import (
    Account,
    Author,
    FavoriteRequest,
    PageMeta,
    PageQuery,
    Resource,
    ResourcePage,
    ResourcesQuery,
    Thumbnail,
)
from service.openapi import PathParameter, operation

USER_ID = PathParameter("userId", "The session's own user id.")
RESOURCE_ID = PathParameter("resourceId", "A resource id.")

IMPORTS_SUCCESSOR = "/api/resources?onlyImported=true"
# RFC 9745: the date from which the imports listing is deprecated.
IMPORTS_DEPRECATED_AT = "@1704067200"  # 2024-01-01T00:00:00Z


def resource_from_row(row: asyncpg.Record) -> Resource:
    thumbnail = row["thumbnail"]
    return Resource(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        type=row["type"],
        account=Account(id=row["account_id"], name=row["account_name"]),
        authors=[Author.model_validate(author) for author in row["authors"]],
        tags=list(row["tags"]),
        thumbnail=Thumbnail.model_validate(thumbnail) if thumbnail is not None else None,
        create_date=row["create_date"],
        update_date=row["update_date"],
        version_id=row["version_id"],
    )


def resource_page(request: web.Request, rows: list[asyncpg.Record], size: int, kind: str) -> ResourcePage:
    return ResourcePage(
        items=[resource_from_row(row) for row in rows[:size]],
        meta=page_meta(request, rows, size, kind, "sort_key", "id"),
    )


async def _imported_page(request: web.Request, user_id: str, query: PageQuery) -> ResourcePage:
    after = decode_cursor(request, query.cursor, "imports", datetime, str)
    rows = await imports.imported_resources(request.app[POOL], user_id, after, query.size + 1)
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
async def list_imports(request: web.Request) -> web.Response:
    session = own_session(request)
    page = await _imported_page(request, session.user_id, parse_query(request, PageQuery))
    return json_response(
        page,
        headers={
            "Deprecation": IMPORTS_DEPRECATED_AT,
            "Link": f'<{IMPORTS_SUCCESSOR}>; rel="successor-version"',
        },
    )


@operation(
    summary="List the resources the session user imported",
    description="Newest import first. `onlyImported=true` is required: it is the only listing offered.",
    tag="resources",
    query=ResourcesQuery,
    responses={200: ResourcePage},
)
async def list_resources(request: web.Request) -> web.Response:
    query = parse_query(request, ResourcesQuery)
    if not query.only_imported:
        message = "Only onlyImported=true is supported."
        raise InvalidInput(message, [FieldError(field="onlyImported", location="query", message=message)])
    return json_response(await _imported_page(request, request[SESSION].user_id, query))


@operation(
    summary="List the user's favorite resources",
    description="Most recently marked first.",
    tag="favorites",
    path=(USER_ID,),
    query=PageQuery,
    responses={200: ResourcePage},
    errors=(403,),
)
async def list_favorites(request: web.Request) -> web.Response:
    session = own_session(request)
    query = parse_query(request, PageQuery)
    after = decode_cursor(request, query.cursor, "favorites", datetime, str)
    rows = await favorites.favorite_resources(request.app[POOL], session.user_id, after, query.size + 1)
    return json_response(resource_page(request, rows, query.size, "favorites"))


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
        rows = await favorites.favorite_resources(conn, session.user_id, None, None)
    page = ResourcePage(items=[resource_from_row(row) for row in rows], meta=PageMeta(cursor=None))
    return json_response(page, status=201)


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
    return web.Response(status=204)
